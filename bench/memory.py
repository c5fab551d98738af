"""Peak memory and speed of training steps, two variants side by side in one run.

    nice python bench/memory.py                          # batch 16 x 512 tokens, fp32
    nice python bench/memory.py --batch-size 8 --steps 3 --precision bf16
    nice python bench/memory.py --compare embedding-gradients --replicas 2 --max-length 128 --batch-size 32

``--compare checkpointing`` (default): without and with ``--gradient-checkpointing``.
``--compare embedding-gradients``: under MirroredStrategy on ``--replicas`` logical CPU
devices, tfft's step handing the embedding matrices' sparse gradients to the optimizer as
they are, against the same step with every sparse gradient summed through a dense
vocab x hidden buffer per replica (what the step did before 0.3.1).

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
# The two variants of each comparison, the baseline first.
COMPARISONS = {"checkpointing": ("off", "on"), "embedding-gradients": ("dense-buffer", "sparse")}
LABELS = {"off": "off", "on": "on (--gradient-checkpointing)", "dense-buffer": "through a dense buffer",
          "sparse": "sparse (tfft)"}


def memory_kib(field: str, process: str = "self") -> int:
    """A ``Vm*`` line of /proc/PROCESS/status (this process's by default), in KiB (VmHWM: the process's
    peak resident memory)."""
    for line in Path(f"/proc/{process}/status").read_text().splitlines():
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


def serve_steps(args: argparse.Namespace, variant: str) -> None:
    """Build the model, then run one training step per ``step`` line on stdin, printing its
    wall and CPU seconds; at ``done``, print this process's memory figures."""
    import contextlib

    from tfft.backend import keras, tf
    from tfft.config import TrainConfig
    from tfft.data import LabelMap
    from tfft.features import encode_for_training
    from tfft.models import load_tokenizer
    from tfft.pipeline import make_dataset
    from tfft.training.model import create_model

    scope = contextlib.nullcontext()
    if args.compare == "embedding-gradients":
        from tfft.distribution import create_strategy

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        scope = create_strategy("mirrored").scope()
    tokenizer = load_tokenizer("default")
    examples = long_examples(tokenizer, args.max_length, args.fill, args.batch_size * (args.warmup + args.steps))
    labels = LabelMap.from_token_examples(examples)
    encoding = encode_for_training(tokenizer, examples, labels, args.max_length)
    dataset = make_dataset(encoding, batch_size=args.batch_size, shuffle=True, seed=0, pad_to_length=args.max_length)
    keras.utils.set_random_seed(0)
    config = TrainConfig(task=TASK, train="bench", epochs=1, batch_size=args.batch_size, max_length=args.max_length,
                         precision=args.precision, gradient_checkpointing=variant == "on")
    with scope:
        model = create_model(config, labels, int(dataset.cardinality()))
        if variant == "dense-buffer":
            install_dense_buffer_step(model)
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


def install_dense_buffer_step(model) -> None:
    """Replace ``model``'s step by tfft's step with every sparse gradient summed through a dense buffer
    of its variable's shape and turned back into ``IndexedSlices`` of the rows it touched (the baseline)."""
    from tfft.backend import tf
    from tfft.training.train_step import TokenWeightedTrainStep

    class DenseBufferStep(TokenWeightedTrainStep):
        def _slice_gradients(self, *args):
            loss, gradients = super()._slice_gradients(*args)
            return loss, [self._through_buffer(g, v) if isinstance(g, tf.IndexedSlices) else g
                          for g, v in zip(gradients, self.variables)]

        def _through_buffer(self, gradient, variable):
            return self._touched_rows(self._dense(gradient, variable), self._rows(gradient, variable))

    DenseBufferStep(model, micro_batches=1, loss=model.loss)


def read_reply(worker: subprocess.Popen, prefix: str) -> str:
    """The rest of the worker's next stdout line starting with ``prefix`` (other lines are skipped)."""
    for line in worker.stdout:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise RuntimeError(f"a benchmark worker ended without a {prefix.strip()} line (exit code {worker.wait()})")


def measure_side_by_side(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Both variants in their own processes, alive together and taking turns step by step
    (alternating which goes first), so a busy machine slows both alike."""
    variants = COMPARISONS[args.compare]
    workers = {variant: subprocess.Popen([sys.executable, __file__, "--serve", variant] + sys.argv[1:],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for variant in variants}
    try:
        for worker in workers.values():
            read_reply(worker, "READY")
        times = {variant: [] for variant in variants}
        for step in range(args.warmup + args.steps):
            for variant in variants[::1 if step % 2 == 0 else -1]:
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
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="checkpointing")
    parser.add_argument("--replicas", type=int, default=2, help="logical CPU devices (--compare embedding-gradients)")
    parser.add_argument("--serve", choices=sorted(LABELS), help=argparse.SUPPRESS)  # one variant's worker process
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    if args.serve:
        serve_steps(args, args.serve)
        return
    if not CONLL_TRAIN.is_file():
        sys.exit(f"{CONLL_TRAIN} not found: this benchmark trains on CoNLL-2003 documents")
    results = measure_side_by_side(args)
    baseline, variant = COMPARISONS[args.compare]
    replicas = f", {args.replicas} replicas (MirroredStrategy)" if args.compare == "embedding-gradients" else ""
    print(f"default model, batch {args.batch_size} x {args.max_length} tokens ({args.precision}){replicas}, "
          f"{results[baseline]['real_tokens_per_sequence']:.0f} real tokens per sequence, {args.steps} timed steps")
    print(f"{args.compare:<30}{'peak RSS GiB':>14}{'before training':>17}{'s/step':>9}"
          f"{'CPU s/step':>12}{'seq/s':>8}")
    for name in (baseline, variant):
        r = results[name]
        print(f"{LABELS[name]:<30}{r['peak_rss_gib']:>14.2f}{r['rss_before_training_gib']:>17.2f}"
              f"{r['seconds_per_step']:>9.2f}{r['cpu_seconds_per_step']:>12.2f}{r['sequences_per_s']:>8.2f}")
    print("BENCH_JSON " + json.dumps({"compare": args.compare, "replicas": args.replicas if replicas else 1,
                                      "batch_size": args.batch_size, "max_length": args.max_length,
                                      "precision": args.precision, **results}))


if __name__ == "__main__":
    main()
