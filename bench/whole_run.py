"""The whole ``tfft train`` process on a 2,000-sentence CoNLL-2003 slice against the seed articles'
pipeline, in one run, with where tfft's seconds go.

    python bench/whole_run.py                 # 2,000 training and 500 validation sentences, defaults
    python bench/whole_run.py --sentences 1000 --epochs 2

tfft runs as a user runs it, ``tfft train`` in a fresh process with its defaults (start-up,
reading and encoding, building the model, tracing, every step, validation each epoch, the final
report and writing the run all counted), timed from outside. Its rate is the training sentences
it went through (epochs x sentences) per second of that wall time. The seed pipeline
(``bench/plain_pipeline.py`` with every row padded to 128, the model's own ``model.fit``) is
timed at its steady state only, over ``--seed-steps`` steps after warm-up, which flatters it.
Prints both rates, their ratio, the seconds ``tfft train`` reports per phase, and one JSON line
(``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import plain_variant  # noqa: E402

from tfft.backend import keras  # noqa: E402
from tfft.data import read_conll  # noqa: E402

CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"


def write_slice(examples, path: Path) -> None:
    path.write_text("".join("\n".join(f"{t} {g}" for t, g in zip(e.tokens, e.tags)) + "\n\n" for e in examples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--validation-sentences", type=int, default=500)
    parser.add_argument("--epochs", type=int, help="tfft's epochs (default: what tfft train chooses)")
    parser.add_argument("--seed-steps", type=int, default=20)
    args = parser.parse_args()
    if not (CONLL / "train.txt").is_file():
        sys.exit(f"{CONLL / 'train.txt'} not found")

    train = read_conll(CONLL / "train.txt")[:args.sentences]
    with tempfile.TemporaryDirectory(prefix="tfft-whole-run-") as scratch:
        scratch = Path(scratch)
        write_slice(train, scratch / "train.txt")
        write_slice(read_conll(CONLL / "valid.txt")[:args.validation_sentences], scratch / "valid.txt")
        command = [sys.executable, "-m", "tfft.cli", "train", "--task", "token-classification",
                   "--train", str(scratch / "train.txt"), "--validation", str(scratch / "valid.txt"),
                   "--output-dir", str(scratch / "run")]
        if args.epochs:
            command += ["--epochs", str(args.epochs)]
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if finished.returncode:
            sys.exit(f"tfft train failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
        metrics = json.loads((scratch / "run" / "metrics.json").read_text())
        epochs = len(json.loads((scratch / "run" / "history.json").read_text())["loss"])

    keras.utils.set_random_seed(0)
    seed = plain_variant(bucketed=False)("token-classification", train, precision="fp32", warmup=5,
                                         steps=args.seed_steps, batch_size=32)
    tfft_rate = epochs * len(train) / wall
    results = {"sentences": len(train), "epochs": epochs, "tfft_wall_s": wall, "tfft_sentences_per_s": tfft_rate,
               "seed_steady_sentences_per_s": seed["sentences_per_s"],
               "ratio": tfft_rate / seed["sentences_per_s"], "tfft_seconds": metrics["seconds"],
               "tfft_best": metrics["best"]}
    print(f"tfft train, whole process: {epochs} epochs x {len(train)} sentences in {wall:.1f} s = {tfft_rate:.1f} "
          f"sentences/s (validation F1 {metrics['best'].get('val_f1', float('nan')):.4f})")
    print(f"seed pipeline (padded to 128), steady state: {seed['sentences_per_s']:.1f} sentences/s")
    print(f"ratio: {results['ratio']:.2f} (target: at least 4)")
    print("where tfft's seconds went: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["seconds"].items())
          + f" (the rest of {wall:.1f}: process exit and what /proc cannot see)")
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
