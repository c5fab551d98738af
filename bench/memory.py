"""Peak memory and speed of training on long inputs, with and without --gradient-checkpointing, in one run.

    nice python bench/memory.py                          # batch 16 x 512 tokens, fp32
    nice python bench/memory.py --batch-size 8 --steps 3 --precision bf16

The inputs are CoNLL-2003 training documents cut into examples of consecutive sentences
that fill at least ``--fill`` of ``--max-length`` subword tokens (real long inputs for
token classification), every batch padded to ``--max-length``. Each variant trains the
default model for ``--warmup`` + ``--steps`` steps in its own process, so each peak resident
memory (VmHWM) is that variant's alone; the two processes take turns step by step, so a
busy machine slows both alike. Speed is given as wall and as CPU seconds per step (all
threads). Prints a table and one JSON line
(prefix ``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONLL_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "train.txt"
TASK = "token-classification"
VARIANTS = ("off", "on")  # --gradient-checkpointing


def memory_kib(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status, in KiB (VmHWM: the process's peak resident memory)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def long_examples(tokenizer, max_length: int, fill: float, count: int) -> List:
    """Examples of consecutive sentences of one document holding at least ``fill * max_length`` subwords."""
    from tfft.data import TokenExample, read_conll

    budget, examples, tokens, tags, size, document = max_length - 2, [], [], [], 0, None
    for sentence in read_conll(CONLL_TRAIN):
        length = len(tokenizer(sentence.tokens, is_split_into_words=True, add_special_tokens=False)["input_ids"])
        if sentence.document != document or size + length > budget:
            if size >= fill * max_length:
                examples.append(TokenExample(tokens, tags))
                if len(examples) == count:
                    return examples
            tokens, tags, size, document = [], [], 0, sentence.document
        tokens, tags, size = tokens + sentence.tokens, tags + sentence.tags, size + length
    return examples


def serve_steps(args: argparse.Namespace, checkpointing: bool) -> None:
    """Build the model, then run one training step per ``step`` line on stdin, printing its
    wall and CPU seconds; at ``done``, print this process's memory figures."""
    from tfft.backend import keras
    from tfft.config import TrainConfig
    from tfft.data import LabelMap
    from tfft.features import encode_for_training
    from tfft.models import load_tokenizer
    from tfft.pipeline import make_dataset
    from tfft.training.trainer import create_model

    tokenizer = load_tokenizer("default")
    examples = long_examples(tokenizer, args.max_length, args.fill, args.batch_size * (args.warmup + args.steps))
    labels = LabelMap.from_token_examples(examples)
    encoding = encode_for_training(tokenizer, examples, labels, args.max_length)
    dataset = make_dataset(encoding, batch_size=args.batch_size, shuffle=True, seed=0, pad_to_length=args.max_length)
    keras.utils.set_random_seed(0)
    config = TrainConfig(task=TASK, train="bench", epochs=1, batch_size=args.batch_size, max_length=args.max_length,
                         precision=args.precision, gradient_checkpointing=checkpointing)
    model = create_model(config, labels, int(dataset.cardinality()))
    before_training = memory_kib("VmRSS")
    batches = iter(dataset.repeat())
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        features, targets = next(batches)
        wall, cpu = time.perf_counter(), time.process_time()
        model.train_on_batch(features, targets)
        print("STEP " + json.dumps([time.perf_counter() - wall, time.process_time() - cpu]), flush=True)
    print("MEMORY " + json.dumps({"peak_rss_gib": memory_kib("VmHWM") / 2**20,
                                  "rss_before_training_gib": before_training / 2**20,
                                  "real_tokens_per_sequence": float(encoding.row_lengths.mean())}), flush=True)


def read_reply(worker: subprocess.Popen, prefix: str) -> str:
    """The rest of the worker's next stdout line starting with ``prefix`` (other lines are skipped)."""
    for line in worker.stdout:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise RuntimeError(f"a benchmark worker ended without a {prefix.strip()} line (exit code {worker.wait()})")


def measure_side_by_side(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Both variants in their own processes, alive together and taking turns step by step
    (alternating which goes first), so a busy machine slows both alike."""
    workers = {variant: subprocess.Popen([sys.executable, __file__, "--serve", variant] + sys.argv[1:],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for variant in VARIANTS}
    try:
        for worker in workers.values():
            read_reply(worker, "READY")
        times = {variant: [] for variant in VARIANTS}
        for step in range(args.warmup + args.steps):
            for variant in VARIANTS[::1 if step % 2 == 0 else -1]:
                workers[variant].stdin.write("step\n")
                workers[variant].stdin.flush()
                times[variant].append(json.loads(read_reply(workers[variant], "STEP ")))
        results = {}
        for variant, worker in workers.items():
            worker.stdin.write("done\n")
            worker.stdin.flush()
            wall, cpu = (sum(column) / args.steps for column in zip(*times[variant][args.warmup:]))
            results[variant] = {**json.loads(read_reply(worker, "MEMORY ")), "seconds_per_step": wall,
                                "cpu_seconds_per_step": cpu, "sequences_per_s": args.batch_size / wall}
        return results
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--fill", type=float, default=0.8, help="least fraction of --max-length an example fills")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="steps before timing (tracing, first allocations)")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant's worker process
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    if args.serve:
        serve_steps(args, args.serve == "on")
        return
    if not CONLL_TRAIN.is_file():
        sys.exit(f"{CONLL_TRAIN} not found: this benchmark trains on CoNLL-2003 documents")
    results = measure_side_by_side(args)
    print(f"default model, batch {args.batch_size} x {args.max_length} tokens ({args.precision}), "
          f"{results['off']['real_tokens_per_sequence']:.0f} real tokens per sequence, {args.steps} timed steps")
    print(f"{'gradient checkpointing':<30}{'peak RSS GiB':>14}{'before training':>17}{'s/step':>9}"
          f"{'CPU s/step':>12}{'seq/s':>8}")
    for variant, label in (("off", "off"), ("on", "on (--gradient-checkpointing)")):
        r = results[variant]
        print(f"{label:<30}{r['peak_rss_gib']:>14.2f}{r['rss_before_training_gib']:>17.2f}"
              f"{r['seconds_per_step']:>9.2f}{r['cpu_seconds_per_step']:>12.2f}{r['sequences_per_s']:>8.2f}")
    print("BENCH_JSON " + json.dumps({"batch_size": args.batch_size, "max_length": args.max_length,
                                      "precision": args.precision, **results}))


if __name__ == "__main__":
    main()
