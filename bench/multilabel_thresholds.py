#!/usr/bin/env python3
"""Multi-label decision rules on skewed labels, scored only through what ``tfft predict`` prints.

No multi-label corpus with rare labels can be fetched here, so one is made from the real CoNLL-2003
files in ``../shared/data``: each sentence of 3 or more tokens, written as people write it
(``tfft.data.natural``), gets 10 sentence-level labels, 5 of them on fewer than 10 % of texts:

* frequent: ``PER``, ``ORG``, ``LOC``, ``MISC`` (mentions an entity of the type), ``number`` (holds a number);
* rare: ``5-mentions`` (5 or more entity mentions), ``2-MISC`` (2 or more MISC mentions), ``3-PER``
  (3 or more people), ``4-word-entity`` (an entity of 4 or more words), ``money`` (``million``/``billion``).

Sentences with none of the labels are left out, so every text has at least one (as in many real
multi-label corpora, where "at least one label" is then a candidate rule). Training takes the first
``--train-size`` texts of ``train.txt``, validation the first ``--validation-size`` of ``valid.txt``,
and the rest of ``valid.txt`` is the held-out test split, scored only.

``tfft train --task multi-label-classification`` runs with its defaults (``--epochs`` aside, to fit the
time), then ``tfft predict`` prints labels and probabilities for the validation and test texts. On the
test split it scores, with micro- and macro-F1:

* **served**: the labels ``tfft predict`` printed (the decision rule the run chose and recorded);
* **0.5**: the printed probabilities cut at 0.5;
* **global**: cut at the one threshold best for micro-F1 on the printed validation probabilities;
* **per-label F1 (tfft 0.4.1)**: cut at the thresholds tfft served before: each label's own best F1 on
  validation (a label with fewer than 5 validation positives taking the global one).

Prints one JSON object and a Markdown table. Usage:
  python bench/multilabel_thresholds.py [--data ../shared/data] [--train-size 3000] [--epochs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from tfft.data import iob2_spans, read_conll
from tfft.data.natural import natural_text
from tfft.metrics import best_f1_threshold, f1_scores

TFFT = [sys.executable, "-m", "tfft.cli"]
LABELS = ("PER", "ORG", "LOC", "MISC", "number", "5-mentions", "2-MISC", "3-PER", "4-word-entity", "money")
NUMBER = re.compile(r"[\d.,]*\d[\d.,]*")
# tfft 0.4.1 gave a label its own threshold from this many positive validation examples.
OLD_MIN_POSITIVES = 5


def sentence_labels(tokens: Sequence[str], tags: Sequence[str]) -> List[str]:
    """The labels of one CoNLL sentence (see the module docstring)."""
    spans = iob2_spans(tags)
    mentions = Counter(kind for kind, _, _ in spans)
    found = set(mentions)
    found |= {"number"} if any(NUMBER.fullmatch(t) for t in tokens) else set()
    found |= {"5-mentions"} if len(spans) >= 5 else set()
    found |= {"2-MISC"} if mentions["MISC"] >= 2 else set()
    found |= {"3-PER"} if mentions["PER"] >= 3 else set()
    found |= {"4-word-entity"} if any(end - start >= 4 for _, start, end in spans) else set()
    found |= {"money"} if any(t.lower() in ("million", "billion") for t in tokens) else set()
    return [label for label in LABELS if label in found]


def corpus(path: Path) -> List[Dict]:
    """Sentences of 3 or more tokens with at least one label, as written text with their labels."""
    rows = []
    for example in read_conll(path):
        labels = sentence_labels(example.tokens, example.tags) if len(example.tokens) >= 3 else []
        if labels:
            rows.append({"text": natural_text(example.tokens)[0], "labels": labels})
    return rows


def run(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def write_tsv(path: Path, rows: Sequence[Dict]) -> Path:
    path.write_text("text\tlabels\n" + "".join(f"{r['text']}\t{','.join(r['labels'])}\n" for r in rows),
                    encoding="utf-8")
    return path


def predict(run_dir: Path, rows: Sequence[Dict], path: Path) -> List[Dict]:
    path.write_text("".join(f"{r['text']}\n" for r in rows), encoding="utf-8")
    results = [json.loads(line) for line in run([*TFFT, "predict", str(run_dir), "--input", str(path)]).splitlines()
               if line.startswith("{")]
    assert len(results) == len(rows), (len(results), len(rows))
    return results


def matrices(rows: Sequence[Dict], results: Sequence[Dict], labels: Sequence[str]):
    """Truth, printed probabilities and printed decisions, ``[texts, labels]`` each."""
    truth = np.asarray([[label in r["labels"] for label in labels] for r in rows], np.float32)
    probabilities = np.asarray([[p["probabilities"][label] for label in labels] for p in results], np.float32)
    served = np.asarray([[label in p["labels"] for label in labels] for p in results], bool)
    return truth, probabilities, served


def old_per_label_thresholds(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The thresholds tfft 0.4.1 tuned: each label's own best F1, the global one for rare labels."""
    overall = best_f1_threshold(probabilities.ravel(), truth.ravel())
    return np.asarray([best_f1_threshold(probabilities[:, j], truth[:, j])
                       if truth[:, j].sum() >= OLD_MIN_POSITIVES else overall
                       for j in range(truth.shape[1])], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--validation-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep data and the run here (default: a temporary dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfft-multilabel-thresholds-"))
    work.mkdir(parents=True, exist_ok=True)
    train = corpus(args.data / "conll2003" / "train.txt")[:args.train_size]
    held_out = corpus(args.data / "conll2003" / "valid.txt")
    valid, test = held_out[:args.validation_size], held_out[args.validation_size:]
    run_dir = work / "run"
    started = time.perf_counter()
    run([*TFFT, "train", "--task", "multi-label-classification", "--train", str(write_tsv(work / "train.tsv", train)),
         "--validation", str(write_tsv(work / "valid.tsv", valid)), "--label-column", "labels",
         "--epochs", str(args.epochs), "--output-dir", str(run_dir), "--overwrite"])
    train_seconds = time.perf_counter() - started
    model_config = json.loads((run_dir / "model" / "config.json").read_text())
    valid_results = predict(run_dir, valid, work / "valid.txt")
    test_results = predict(run_dir, test, work / "test.txt")
    labels = list(test_results[0]["probabilities"])
    valid_truth, valid_probabilities, _ = matrices(valid, valid_results, labels)
    truth, probabilities, served = matrices(test, test_results, labels)
    overall = best_f1_threshold(valid_probabilities.ravel(), valid_truth.ravel())
    old = old_per_label_thresholds(valid_probabilities, valid_truth)
    rules = {
        "served (new rule)": served,
        "0.5": probabilities >= 0.5,
        "global": probabilities >= np.float32(overall),
        "per-label F1 (tfft 0.4.1)": probabilities >= old[None, :],
    }
    report = {
        "labels": labels,
        "train_share": {label: round(float(np.mean([label in r["labels"] for r in train])), 4) for label in labels},
        "test_share": {label: round(float(truth[:, j].mean()), 4) for j, label in enumerate(labels)},
        "sizes": {"train": len(train), "validation": len(valid), "test": len(test)},
        "epochs": args.epochs, "train_seconds": round(train_seconds, 1),
        "served_rule": {"name": model_config.get("tfft_decision_rule"),
                        "at_least_one": model_config.get("tfft_at_least_one"),
                        "thresholds": dict(zip(labels, np.round(model_config["tfft_thresholds"], 4).tolist()))},
        "global_threshold": round(overall, 4),
        "old_thresholds": dict(zip(labels, np.round(old, 4).tolist())),
        "test": {name: f1_scores(truth, decided) for name, decided in rules.items()},
        "test_per_label_f1": {name: dict(zip(labels, np.round([
            f1_scores(truth[:, [j]], decided[:, [j]])["micro_f1"] for j in range(len(labels))], 4).tolist()))
            for name, decided in rules.items()},
    }
    print(json.dumps(report, indent=2))
    print((work / "run" / "reports" / "validation.txt").read_text())
    print("| decision rule | test micro-F1 | test macro-F1 |\n|---|---|---|")
    for name, scores in report["test"].items():
        print(f"| {name} | {scores['micro_f1']:.4f} | {scores['macro_f1']:.4f} |")


if __name__ == "__main__":
    main()
