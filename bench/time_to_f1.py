"""Time to a good NER model: ``tfft train`` with its defaults against the plain bucketed pipeline,
each a fresh process timed from outside until its validation F1 first reaches ``--target``.

    python bench/time_to_f1.py                          # full CoNLL-2003, target 0.92
    python bench/time_to_f1.py --target 0.90 --only plain

Both train on the whole CoNLL-2003 training file and score entity F1 (seqeval) on the whole
validation file after every epoch. tfft runs as a user runs it (``tfft train`` with no options
but the files); its ``history.csv`` is read as each epoch ends. The plain pipeline
(``bench/plain_pipeline.py``: no tfft code, length buckets, the model's own ``model.fit``, AdamW
at the transformers docs' 5e-5) runs in a child process of this script that scores each epoch
with a Keras callback, as its docs do, and gets the same number of epochs as tfft chooses (3).
A process is stopped at the first epoch that reaches the target; one that never does reports
its best F1 and its whole time. Prints both times, their ratio, each process's peak resident
memory and one JSON line (``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import memory_kib  # noqa: E402

CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"
PLAIN_EPOCH = "PLAIN_EPOCH"


def race(command: List[str], epochs: Iterator, target: float, started: float,
         process: subprocess.Popen) -> Dict[str, object]:
    """Follow one contender's per-epoch F1 until it reaches ``target`` or ends; then stop it."""
    scores: List[Tuple[float, float]] = []
    peak_rss_gib = None
    try:
        for f1 in epochs:
            scores.append((round(time.perf_counter() - started, 1), f1))
            print(f"  epoch {len(scores)}: F1 {f1:.4f} at {scores[-1][0]:.0f} s", flush=True)
            if f1 >= target:
                break
        peak_rss_gib = peak_memory_gib(process.pid)
    finally:
        process.kill()
        process.wait()
    reached = next((seconds for seconds, f1 in scores if f1 >= target), None)
    if not scores:
        sys.exit(f"{' '.join(command)} scored no epoch")
    return {"epochs": scores, "seconds_to_target": reached, "best_f1": max(f1 for _, f1 in scores),
            "seconds": time.perf_counter() - started, "peak_rss_gib": peak_rss_gib}


def peak_memory_gib(pid: int) -> Optional[float]:
    """The process's peak resident memory (VmHWM), read before it is stopped; None once it has ended."""
    try:
        return memory_kib("VmHWM", str(pid)) / 2**20
    except (OSError, KeyError):  # ended: no /proc entry, or a zombie's without memory lines
        return None


def tfft_epochs(run_dir: Path, process: subprocess.Popen) -> Iterator[float]:
    """Validation F1 of each epoch as ``tfft train`` appends it to ``history.csv`` (in the work
    directory while it trains, in the run directory once it has finished)."""
    from tfft.run_dir import HISTORY_CSV, work_dir_of

    seen = 0
    while True:
        finished = process.poll() is not None
        for history in (work_dir_of(run_dir) / HISTORY_CSV, run_dir / HISTORY_CSV):
            if history.is_file():
                rows = list(csv.DictReader(history.open()))
                for row in rows[seen:]:
                    yield float(row["val_f1"])
                seen = max(seen, len(rows))
                break
        if finished:
            return
        time.sleep(1.0)


def plain_epochs(process: subprocess.Popen) -> Iterator[float]:
    for line in process.stdout:
        if line.startswith(PLAIN_EPOCH):
            yield float(line.split()[2])


def run_tfft(data: Path, scratch: Path, target: float) -> Dict[str, object]:
    run_dir = scratch / "tfft-run"
    command = [sys.executable, "-m", "tfft.cli", "train", "--task", "token-classification",
               "--train", str(data / "train.txt"), "--validation", str(data / "valid.txt"),
               "--output-dir", str(run_dir)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return race(command, tfft_epochs(run_dir, process), target, started, process)


def run_plain(data: Path, epochs: int, target: float) -> Dict[str, object]:
    command = [sys.executable, __file__, "--plain-child", "--data", str(data), "--epochs", str(epochs)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return race(command, plain_epochs(process), target, started, process)


def plain_child(data: Path, epochs: int) -> None:
    """The plain pipeline's whole run: read, encode, fit with a seqeval callback each epoch."""
    import math

    import numpy as np
    import plain_pipeline as plain
    from seqeval.metrics import f1_score

    model_dir = plain.default_model_dir()
    tokenizer = plain.tokenizer(model_dir)
    train = plain.read_conll(data / "train.txt")
    valid = plain.read_conll(data / "valid.txt")
    tags = sorted({tag for _, sentence_tags in train for tag in sentence_tags})
    train_ids, train_labels = plain.encode_tagged(tokenizer, [w for w, _ in train],
                                                  [[tags.index(t) for t in ts] for _, ts in train])
    # Validation sentences are scored whole (as tfft scores them), and a tag unseen in training counts as O.
    valid_ids, valid_labels = plain.encode_tagged(tokenizer, [w for w, _ in valid],
                                                  [[tags.index(t if t in tags else "O") for t in ts] for _, ts in valid],
                                                  max_length=tokenizer.model_max_length)
    model = plain.model(model_dir, "token-classification", len(tags))
    keras = plain.keras

    class EntityF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            gold, predicted = [], []
            for start in range(0, len(valid_ids), 64):
                rows = valid_ids[start:start + 64]
                width = max(len(r) for r in rows)
                ids = np.array([r + [0] * (width - len(r)) for r in rows], np.int32)
                logits = self.model({"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32)},
                                    training=False).logits.numpy()
                for row, labels in enumerate(valid_labels[start:start + 64]):
                    kept = [i for i, label in enumerate(labels) if label != -100]
                    gold.append([tags[labels[i]] for i in kept])
                    predicted.append([tags[int(np.argmax(logits[row, i]))] for i in kept])
            print(f"{PLAIN_EPOCH} {epoch + 1} {f1_score(gold, predicted)}", flush=True)

    data = plain.dataset(train_ids, train_labels, batch_size=32, bucketed=True)
    model.fit(data, epochs=epochs, steps_per_epoch=math.ceil(len(train_ids) / 32), callbacks=[EntityF1()], verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CONLL, help="a folder with CoNLL train.txt and valid.txt")
    parser.add_argument("--target", type=float, default=0.92, help="validation entity F1 to reach")
    parser.add_argument("--epochs", type=int, default=3, help="the plain pipeline's epochs at most")
    parser.add_argument("--only", choices=["tfft", "plain"], help="run one contender")
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        return plain_child(args.data, args.epochs)
    if not (args.data / "train.txt").is_file():
        sys.exit(f"{args.data / 'train.txt'} not found")
    results: Dict[str, Optional[Dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="tfft-time-to-f1-") as scratch:
        for name in ("tfft", "plain"):
            if args.only in (None, name):
                print(f"{name}:", flush=True)
                results[name] = (run_tfft(args.data, Path(scratch), args.target) if name == "tfft"
                                 else run_plain(args.data, args.epochs, args.target))
    for name, result in results.items():
        reached = result["seconds_to_target"]
        memory = f", peak memory {result['peak_rss_gib']:.2f} GiB" if result["peak_rss_gib"] else ""
        print(f"{name}: " + (f"F1 {args.target} after {reached:.0f} s" if reached is not None else
                             f"F1 {args.target} not reached in {result['seconds']:.0f} s (best {result['best_f1']:.4f})")
              + memory)
    if all(results.get(name) and results[name]["seconds_to_target"] for name in ("tfft", "plain")):
        results["ratio"] = results["plain"]["seconds_to_target"] / results["tfft"]["seconds_to_target"]
        print(f"tfft reaches it {results['ratio']:.2f}x sooner")
    print("BENCH_JSON " + json.dumps({"target": args.target, **results}))


if __name__ == "__main__":
    main()
