#!/usr/bin/env python3
"""NER through the user's path on text as people write it, against ``tfft evaluate``, side by side.

The gold CoNLL file is written back as a newspaper prints it (``tfft.data.natural``: no space
before ``, . ; : ! ? ) %`` or clitics, none after ``( $``, quotes attached to what they
enclose), its gold entities kept as exact character spans. Then, for each word rule:

* ``word_agreement``: the share of sentences whose words (``tfft.words.word_spans``) are
  exactly the gold tokens;
* ``predict_f1``: ``tfft predict RUN --word-split RULE`` on the written text, every predicted
  entity scored by exact ``(type, start, end)`` match against the gold spans (micro P/R/F1);
* ``saved_model_f1``: the same through the export's ``serving_default`` (``tfft predict
  --saved-model``; the whitespace rule through its ``serving_pretokenized`` signature);
* ``spans_swallowing_punctuation``: predicted entities whose first or last gold token is
  punctuation or a clitic (``Paris.``, ``(Reuters``, ``England's``); ``spans_cutting_tokens``:
  predicted entities that start or end inside a gold token.

``evaluate_f1`` is ``tfft evaluate`` on the gold tokens. The commands run as subprocesses,
exactly as a user types them. Prints one JSON object and a Markdown table.

Usage: python bench/natural_text.py RUN_DIR GOLD.conll [--saved-model DIR] [--max-sentences N]
(without --saved-model the run is exported to a temporary directory first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

from tfft.data import read_conll
from tfft.data.natural import natural_entity_spans, natural_text
from tfft.words import NATURAL, WHITESPACE, word_spans

TFFT = [sys.executable, "-m", "tfft.cli"]
Entity = Tuple[int, str, int, int]  # sentence, type, start, end


def run(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def predicted_entities(where: Sequence[str], texts_file: Path, word_split: str) -> List[Dict]:
    out = run([*TFFT, "predict", *where, "--input", str(texts_file), "--word-split", word_split])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def scores(gold: Set[Entity], predicted: Set[Entity]) -> Dict[str, float]:
    correct = len(gold & predicted)
    precision = correct / len(predicted) if predicted else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def is_punctuation_or_clitic(token: str) -> bool:
    return token.lower() in ("'s", "n't", "'re", "'ve", "'ll", "'m", "'d") or all(
        unicodedata.category(c).startswith("P") for c in token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("gold")
    parser.add_argument("--saved-model", metavar="DIR", help="an export of the run (saved_models/NAME/VERSION)")
    parser.add_argument("--max-sentences", type=int, default=None)
    args = parser.parse_args()

    sentences = [e for e in read_conll(args.gold) if e.tokens][:args.max_sentences]
    written = [natural_entity_spans(e.tokens, e.tags) for e in sentences]
    gold = {(i, t, s, e) for i, (_, entities) in enumerate(written) for t, s, e in entities}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        texts_file = scratch / "texts.txt"
        texts_file.write_text("".join(text + "\n" for text, _ in written), encoding="utf-8")
        # The same sentences, so that evaluate scores what predict is given (report: RUN/reports/<stem>.json).
        gold_file = scratch / "natural-text-bench.conll"
        gold_file.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(e.tokens, e.tags)) + "\n"
                                     for e in sentences), encoding="utf-8")
        run([*TFFT, "evaluate", args.run_dir, "--data", str(gold_file)])
        report = json.loads((Path(args.run_dir) / "reports" / f"{gold_file.stem}.json").read_text())
        saved_model = args.saved_model
        if saved_model is None:
            run([*TFFT, "export", args.run_dir, "--name", "bench", "--export-dir", str(scratch / "exports")])
            saved_model = str(scratch / "exports" / "bench" / "1")
        result = {"run": args.run_dir, "gold": args.gold, "sentences": len(sentences), "entities": len(gold),
                  "evaluate_f1": round(report["scores"]["f1"], 4)}
        for rule in (NATURAL, WHITESPACE):
            agreement = sum(word_spans(text, rule) == natural_text(e.tokens)[1]
                            for (text, _), e in zip(written, sentences)) / len(sentences)
            row = {"word_agreement": round(agreement, 4)}
            for path, where in (("predict", [args.run_dir]), ("saved_model", ["--saved-model", saved_model])):
                predictions = predicted_entities(where, texts_file, rule)
                found = {(i, e["type"], e["start"], e["end"]) for i, p in enumerate(predictions) for e in p["entities"]}
                row[f"{path}"] = scores(gold, found)
                swallowing, cutting = 0, 0
                for prediction, example in zip(predictions, sentences):
                    offsets = natural_text(example.tokens)[1]
                    for entity in prediction["entities"]:
                        covered = [i for i, (s, e) in enumerate(offsets) if s < entity["end"] and e > entity["start"]]
                        swallowing += bool(covered) and (is_punctuation_or_clitic(example.tokens[covered[0]])
                                                         or is_punctuation_or_clitic(example.tokens[covered[-1]]))
                        cutting += (entity["start"] not in {s for s, _ in offsets}
                                    or entity["end"] not in {e for _, e in offsets})
                row[f"{path}_spans_swallowing_punctuation"] = swallowing
                row[f"{path}_spans_cutting_tokens"] = cutting
            result[rule] = row
    print(json.dumps(result))
    print("\n| word rule | word agreement | `tfft predict` F1 | SavedModel F1 | spans swallowing punctuation | "
          "spans cutting a token | `evaluate` F1 (gold tokens) |\n|---|---|---|---|---|---|---|")
    for rule in (NATURAL, WHITESPACE):
        row = result[rule]
        print(f"| {rule} | {row['word_agreement']:.2%} | {row['predict']['f1']:.4f} | {row['saved_model']['f1']:.4f} "
              f"| {row['predict_spans_swallowing_punctuation']} | {row['predict_spans_cutting_tokens']} "
              f"| {result['evaluate_f1']:.4f} |")


if __name__ == "__main__":
    main()
