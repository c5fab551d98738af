"""LoRA against full fine-tuning, side by side in one run: trainable values, saved weights,
training speed and peak memory, for token and sequence classification.

    python bench/lora.py                        # ner and sst2; full and LoRA rank 8 (query, value)
    python bench/lora.py --ranks 8,16 --steps 20 --repeats 2

Each variant trains in its own process (so its peak resident memory is its own), with the
default model, tfft's pipeline and optimizer, batch 32, on the same sampled sentences:
``--warmup`` steps, then ``--steps`` timed optimizer steps, in sentences per second of wall
time and in CPU milliseconds per sentence (all threads; steadier than wall time when other
work shares the machine). The saved size is what the run
directory's ``model/`` holds for the weights: ``tf_model.h5`` for a full run, the adapters
file for a LoRA run. ``--repeats`` alternates the variants and keeps each one's fastest
repeat, which evens out other load on a shared machine. Prints a table and one JSON line
(prefix ``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tfft.backend import keras  # noqa: E402
from tfft.config import TrainConfig  # noqa: E402
from tfft.data import LabelMap, read_conll, read_table  # noqa: E402
from tfft.distribution import Cluster  # noqa: E402
from tfft.lora import ADAPTERS_FILE, save_adapters, trainable_count  # noqa: E402
from tfft.models import load_tokenizer  # noqa: E402
from tfft.training.data import PreparedData, encode_training_examples  # noqa: E402
from tfft.training.model import create_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "ner": ("token-classification", SHARED / "conll2003" / "train.txt"),
    "sst2": ("sequence-classification", SHARED / "sst2" / "train.tsv"),
}


def measure(name: str, rank: int, args: argparse.Namespace) -> dict:
    """Train one variant in this process and return its figures (run by the ``--worker`` process)."""
    task, path = TASKS[name]
    examples = read_conll(path) if task == "token-classification" else read_table(path, text_column="sentence")
    rng = np.random.default_rng(0)
    examples = [examples[i] for i in sorted(rng.choice(len(examples), min(args.examples, len(examples)), replace=False))]
    labels = LabelMap.from_token_examples(examples) if task == "token-classification" else LabelMap.from_text_examples(examples)
    config = TrainConfig(task=task, train=str(path), batch_size=args.batch_size, epochs=1, lora_rank=rank,
                         word_shapes=True if task == "token-classification" else None)
    tokenizer = load_tokenizer(config.model)
    data = PreparedData(tokenizer, labels, examples, None, encode_training_examples(config, tokenizer, examples, labels))
    keras.utils.set_random_seed(0)
    dataset, steps_per_epoch = data.train_dataset(config, Cluster.current())
    model = create_model(config, labels, steps_per_epoch)
    rows_per_step = data.encoding.num_rows / steps_per_epoch

    timer = StepTimer(args.warmup)
    total = args.warmup + args.steps
    model.fit(dataset.repeat().take(total), epochs=1, steps_per_epoch=total, callbacks=[timer], verbose=0)
    seconds, cpu_seconds = (end - start for end, start in zip(timer.finished, timer.started))
    sentences = args.steps * rows_per_step
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # training's, before saving
    with tempfile.TemporaryDirectory() as directory:
        if rank:
            saved = save_adapters(model, directory, config.model).stat().st_size
        else:
            model.save_pretrained(directory)
            saved = (Path(directory) / "tf_model.h5").stat().st_size
    return {
        "task": name, "variant": f"LoRA r{rank}" if rank else "full", "trainable": trainable_count(model),
        "total": sum(int(np.prod(v.shape)) for v in model.weights), "saved_mb": saved / 2**20,
        "sentences_per_s": sentences / seconds, "cpu_ms_per_sentence": 1000 * cpu_seconds / sentences,
        "peak_rss_mb": peak_rss_mb,
        "saved_file": ADAPTERS_FILE if rank else "tf_model.h5",
    }


class StepTimer(keras.callbacks.Callback):
    """Wall and CPU time (all threads of the process) from the end of warm-up to the last step."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup, self.started, self.finished = warmup, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self.started = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.finished = (time.perf_counter(), time.process_time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="ner,sst2")
    parser.add_argument("--ranks", default="8", help="LoRA ranks to measure beside full fine-tuning")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--examples", type=int, default=2000, help="training sentences sampled from each file")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return

    variants = [(name, rank) for name in args.tasks.split(",") if TASKS[name][1].is_file()
                for rank in [0, *map(int, args.ranks.split(","))]]
    best = {}
    forwarded = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("batch_size", "steps", "warmup", "examples")]
    for _ in range(args.repeats):
        for name, rank in variants:
            output = subprocess.run([sys.executable, __file__, "--worker", name, str(rank), *forwarded],
                                    capture_output=True, text=True, check=True).stdout
            result = json.loads(next(line[7:] for line in output.splitlines() if line.startswith("RESULT ")))
            key = (name, rank)
            if key not in best or result["sentences_per_s"] > best[key]["sentences_per_s"]:
                best[key] = result
    print(f"\n{'task':5} {'variant':8} {'trainable':>11} {'of all':>7} {'saved weights':>14} {'sent/s':>7} "
          f"{'speed-up':>8} {'CPU ms/sent':>11} {'peak RSS':>9}")
    for (name, rank), r in best.items():
        full = best[(name, 0)]
        print(f"{name:5} {r['variant']:8} {r['trainable']:11,} {100 * r['trainable'] / r['total']:6.2f}% "
              f"{r['saved_mb']:10.2f} MiB {r['sentences_per_s']:7.1f} "
              f"{r['sentences_per_s'] / full['sentences_per_s']:7.2f}x {r['cpu_ms_per_sentence']:11.1f} "
              f"{r['peak_rss_mb']:5.0f} MiB")
    print("BENCH_JSON " + json.dumps({"batch_size": args.batch_size, "steps": args.steps, "examples": args.examples,
                                      "repeats": args.repeats, "results": list(best.values())}))


if __name__ == "__main__":
    main()
