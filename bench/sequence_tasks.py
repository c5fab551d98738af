#!/usr/bin/env python3
"""Multi-label classification, regression and imbalanced classes on real text, scored through ``tfft predict``.

Three tasks are made from the real corpora in ``../shared/data`` (no other data can be fetched
here), each split into train / validation (early stopping, thresholds) / test (scored only):

* **multi-label**: CoNLL-2003 sentences written as people write them (``tfft.data.natural``),
  labelled with the entity types they mention (PER, ORG, LOC, MISC; many sentences have none).
  Scored with the labels ``tfft predict`` prints (thresholds tuned on validation) against the
  same probabilities cut at a fixed 0.5: micro- and macro-F1.
* **regression**: the same sentences, the target being how many entity mentions each holds.
  Pearson, Spearman and RMSE of the values ``tfft predict`` prints.
* **imbalanced**: SST-2 with 9 of every 10 negative examples dropped (negatives become a small minority
  positives; the share is reported), trained with and without ``--class-weight balanced``: macro-F1,
  accuracy and the recall of the rare class.

Every model is trained by ``tfft train`` with its defaults and predicted by ``tfft predict`` on
the raw test texts, as subprocesses, exactly as a user types them. Prints one JSON object and a
Markdown table.

Usage: python bench/sequence_tasks.py [--data ../shared/data] [--train-size 3000] [--work DIR]
       [--pooling first|mean]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from tfft.data import iob2_spans, read_conll
from tfft.data.natural import natural_text
from tfft.metrics import multi_label_scores, regression_scores

TFFT = [sys.executable, "-m", "tfft.cli"]
TYPES = ("LOC", "MISC", "ORG", "PER")


def run(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def conll_rows(path: Path) -> List[Dict]:
    """Sentences of 3 or more tokens as written text, with their entity types and mention count."""
    rows = []
    for example in read_conll(path):
        if len(example.tokens) < 3:
            continue
        spans = iob2_spans(example.tags)
        rows.append({"text": natural_text(example.tokens)[0], "types": sorted({t for t, _, _ in spans}),
                     "mentions": len(spans)})
    return rows


def train_and_predict(work: Path, name: str, train_args: Sequence[str], test_texts: Sequence[str],
                      options: Sequence[str] = ()) -> Dict:
    run_dir = work / "runs" / name
    started = time.perf_counter()
    run([*TFFT, "train", *train_args, *options, "--output-dir", str(run_dir), "--overwrite"])
    trained = time.perf_counter() - started
    texts = work / f"{name}.test.txt"
    texts.write_text("\n".join(test_texts) + "\n", encoding="utf-8")
    results = [json.loads(line) for line in run([*TFFT, "predict", str(run_dir), "--input", str(texts)]).splitlines()
               if line.startswith("{")]
    assert len(results) == len(test_texts)
    return {"results": results, "train_seconds": round(trained, 1), "run_dir": str(run_dir)}


def multi_label(work: Path, train: List[Dict], valid: List[Dict], test: List[Dict], options: Sequence[str]) -> Dict:
    args = ["--task", "multi-label-classification", "--label-column", "types", "--text-column", "text",
            "--train", str(write_tsv(work / "ml_train.tsv", ["text", "types"], [(r["text"], ",".join(r["types"]))
                                                                                 for r in train])),
            "--validation", str(write_tsv(work / "ml_valid.tsv", ["text", "types"],
                                          [(r["text"], ",".join(r["types"])) for r in valid]))]
    out = train_and_predict(work, "multi-label", args, [r["text"] for r in test], options)
    labels = list(out["results"][0]["probabilities"])
    truth = np.asarray([[t in r["types"] for t in labels] for r in test], np.float32)
    probabilities = np.asarray([[p["probabilities"][t] for t in labels] for p in out["results"]], np.float32)
    chosen = np.asarray([[t in p["labels"] for t in labels] for p in out["results"]], np.float32)
    # The printed labels are the tuned thresholds' decisions: score them as 0/1 "probabilities" at 0.5.
    tuned = multi_label_scores(truth, chosen, np.full(len(labels), 0.5, np.float32))
    fixed = multi_label_scores(truth, probabilities, np.full(len(labels), 0.5, np.float32))
    thresholds = json.loads((Path(out["run_dir"]) / "model" / "config.json").read_text())["tfft_thresholds"]
    return {"labels": labels, "thresholds": dict(zip(labels, thresholds)), "train_seconds": out["train_seconds"],
            "tuned": {k: tuned[k] for k in ("micro_f1", "macro_f1")},
            "fixed_0.5": {k: fixed[k] for k in ("micro_f1", "macro_f1")},
            "test_examples": len(test), "test_without_label": int((truth.sum(1) == 0).sum())}


def regression(work: Path, train: List[Dict], valid: List[Dict], test: List[Dict], options: Sequence[str]) -> Dict:
    args = ["--task", "regression", "--label-column", "mentions", "--text-column", "text",
            "--train", str(write_tsv(work / "rg_train.tsv", ["text", "mentions"],
                                     [(r["text"], r["mentions"]) for r in train])),
            "--validation", str(write_tsv(work / "rg_valid.tsv", ["text", "mentions"],
                                          [(r["text"], r["mentions"]) for r in valid]))]
    out = train_and_predict(work, "regression", args, [r["text"] for r in test], options)
    scores = regression_scores(np.asarray([r["mentions"] for r in test], np.float64),
                               np.asarray([[p["value"]] for p in out["results"]]))
    return {"train_seconds": out["train_seconds"], "test_examples": len(test),
            **{k: scores[k] for k in ("pearson", "spearman", "rmse")}}


def skewed(rows: List[List[str]]) -> List[List[str]]:
    """Every positive example, and one negative of every ten."""
    kept, negatives = [], 0
    for text, label in rows:
        if label == "0":
            negatives += 1
            if negatives % 10:
                continue
        kept.append([text, label])
    return kept


def imbalanced(work: Path, data: Path, train_size: int, options: Sequence[str]) -> Dict:
    def read(path: Path) -> List[List[str]]:
        return [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]

    train = skewed(read(data / "sst2" / "train.tsv"))[:train_size]
    dev = skewed(read(data / "sst2" / "dev.tsv"))
    valid, test = dev[:len(dev) // 2], dev[len(dev) // 2:]
    files = ["--train", str(write_tsv(work / "sst_train.tsv", ["sentence", "label"], train)),
             "--validation", str(write_tsv(work / "sst_valid.tsv", ["sentence", "label"], valid))]
    gold = np.asarray([int(label) for _, label in test])
    out = {"train_negative_share": round(float(np.mean([label == "0" for _, label in train])), 4),
           "test_examples": len(test)}
    from sklearn.metrics import f1_score

    for name, extra in (("unweighted", []), ("balanced", ["--class-weight", "balanced"])):
        result = train_and_predict(work, f"sst-{name}", ["--task", "sequence-classification", *files, *extra],
                                   [text for text, _ in test], options)
        predicted = np.asarray([int(r["label"]) for r in result["results"]])
        out[name] = {"macro_f1": float(f1_score(gold, predicted, average="macro")),
                     "accuracy": float(np.mean(gold == predicted)),
                     "negative_recall": float(np.mean(predicted[gold == 0] == 0)),
                     "train_seconds": result["train_seconds"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--validation-size", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temporary dir)")
    parser.add_argument("--tasks", default="multi-label,regression,imbalanced")
    parser.add_argument("--pooling", choices=("auto", "first", "mean"),
                        help="every run's --pooling (default: tfft's), to compare what the heads read side by side")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfft-sequence-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    options = ["--pooling", args.pooling] if args.pooling else []
    report = {}
    if {"multi-label", "regression"} & set(tasks):
        train = conll_rows(args.data / "conll2003" / "train.txt")[:args.train_size]
        held_out = conll_rows(args.data / "conll2003" / "valid.txt")
        valid, test = held_out[:args.validation_size], held_out[args.validation_size:]
        if "multi-label" in tasks:
            report["multi_label"] = multi_label(work, train, valid, test, options)
        if "regression" in tasks:
            report["regression"] = regression(work, train, valid, test, options)
    if "imbalanced" in tasks:
        report["imbalanced"] = imbalanced(work, args.data, args.train_size, options)
    print(json.dumps(report, indent=2))
    print("\n| task | set-up | result (test, through `tfft predict`) |\n|---|---|---|")
    if "multi_label" in report:
        m = report["multi_label"]
        for name in ("tuned", "fixed_0.5"):
            print(f"| multi-label (CoNLL entity types) | thresholds {name} | micro-F1 {m[name]['micro_f1']:.4f}, "
                  f"macro-F1 {m[name]['macro_f1']:.4f} |")
    if "regression" in report:
        r = report["regression"]
        print(f"| regression (CoNLL mentions per sentence) | defaults | Pearson {r['pearson']:.4f}, "
              f"Spearman {r['spearman']:.4f}, RMSE {r['rmse']:.4f} |")
    if "imbalanced" in report:
        i = report["imbalanced"]
        for name in ("unweighted", "balanced"):
            print(f"| imbalanced (SST-2, 1 negative in {1 / i['train_negative_share']:.1f}) | {name} | macro-F1 "
                  f"{i[name]['macro_f1']:.4f}, accuracy {i[name]['accuracy']:.4f}, negative recall "
                  f"{i[name]['negative_recall']:.4f} |")


if __name__ == "__main__":
    main()
