"""Training-step throughput: tfft against the plain pipelines users write, side by side in one run.

    python bench/throughput.py                              # NER and SST-2, fp32 (+ bf16 where supported)
    python bench/throughput.py --tasks ner --variants tfft,tfft+xla --steps 20

Every variant trains the same default model on the same sampled rows with batch 32 (tfft's
token-budget variants: about as many sentences per step) for ``--warmup`` untimed steps then
``--steps`` timed ones. The baselines come from ``bench/plain_pipeline.py``, which uses no tfft
code: ``plain-bucketed`` (length buckets, the model's own step and loss) and ``plain-padded``
(every row padded to 128, the seed articles' pipeline). For each it prints sentences/s, real
(non-padding) tokens/s, useful GFLOP/s (6 x the matmul parameters per real token: forward 2,
backward 4; attention scores and embedding lookups left out), the fraction of a large
``tf.matmul``'s FLOP/s measured in this run, and the ratio to ``plain-bucketed`` at the same
precision. Prints a table and one JSON line (prefix ``BENCH_JSON``).

Variants (``--variants``): ``tfft`` (what ``tfft train`` does by default: packed rows without
attention dropout for NER, length buckets otherwise), ``+xla`` (XLA-compiled step, every batch
shape compiled before timing), ``+no-attention-dropout`` (``--attention-dropout 0``),
``+attention-dropout`` (``--attention-dropout 0.1``, the checkpoint's), ``+no-packing`` (NER in
length buckets, with the checkpoint's attention dropout as ``tfft train --no-packing``). bf16
runs only where the hardware has bf16 matmuls (AVX-512 BF16 / AMX on CPUs, compute capability 8
on GPUs); elsewhere it is emulated and the figure would say nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import plain_pipeline as plain  # noqa: E402

from tfft.backend import keras, tf  # noqa: E402
from tfft.config import TrainConfig  # noqa: E402
from tfft.data import LabelMap, read_conll, read_table  # noqa: E402
from tfft.features import encode_for_training  # noqa: E402
from tfft.families import family_of  # noqa: E402
from tfft.models import checkpoint_config, default_model_dir, load_tokenizer, set_precision  # noqa: E402
from tfft.pipeline import make_dataset, pack_length_for  # noqa: E402
from tfft.training.data import packing_options  # noqa: E402
from tfft.training.model import create_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "ner": ("token-classification", SHARED / "conll2003" / "train.txt"),
    "sst2": ("sequence-classification", SHARED / "sst2" / "train.tsv"),
}


class StepTimer(keras.callbacks.Callback):
    """Wall time of the steps after warm-up."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.started = None
        self.finished = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.finished = time.perf_counter()


def matmul_peak(dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul, the hardware reference for the useful FLOP/s."""
    a = tf.cast(tf.random.normal((size, size), dtype=tf.float32), dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a)
    result.numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def bf16_matmuls_in_hardware() -> bool:
    """True where bf16 matmuls run natively: a GPU of compute capability 8+, or a CPU with AVX-512 BF16 / AMX."""
    for gpu in tf.config.list_physical_devices("GPU"):
        if tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))[0] >= 8:
            return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_flops_per_token(model) -> float:
    """Training FLOPs per real token: 6 x parameters used in matmuls (forward 2, backward 4)."""
    matmul_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables
                        if len(v.shape) == 2 and "embeddings" not in v.name)
    return 6.0 * matmul_params


def counted_batches(batches: tf.data.Dataset, skip: int, cls_id: int, pad_id: int) -> Dict[str, float]:
    """Sentences ([CLS] tokens) and real tokens in the batches after the first ``skip``."""
    sentences = tokens = 0
    for batch in batches.skip(skip):
        features = batch[0] if isinstance(batch, tuple) else batch
        ids = features["input_ids"].numpy()
        sentences += int((ids == cls_id).sum())
        tokens += int((ids != pad_id).sum())
    return {"sentences": sentences, "tokens": tokens}


def timed_fit(model, dataset: tf.data.Dataset, warmup: int, steps: int, cls_id: int, pad_id: int) -> Dict[str, float]:
    """Train ``warmup + steps`` steps; rates over the last ``steps``, counted from the batches they trained on.

    The batches are cached before training: a shuffled dataset draws a new order for every
    iterator, so counting one pass and training on another would count other batches."""
    total = warmup + steps
    batches = dataset.take(total).cache()
    for _ in batches:  # fills the cache
        pass
    counts = counted_batches(batches, warmup, cls_id, pad_id)
    timer = StepTimer(warmup)
    model.fit(batches, epochs=1, steps_per_epoch=total, callbacks=[timer], verbose=0)
    seconds = timer.finished - timer.started
    return {
        "sentences_per_s": counts["sentences"] / seconds,
        "real_tokens_per_s": counts["tokens"] / seconds,
        "useful_flops": counts["tokens"] * model_flops_per_token(model) / seconds,
    }


def plain_variant(bucketed: bool) -> Callable:
    def measure(task, sample, *, precision, warmup, steps, batch_size, seed=0, **_):
        model_dir = str(default_model_dir())
        tokenizer = plain.tokenizer(model_dir)
        if task == "token-classification":
            tags = sorted({tag for e in sample for tag in e.tags})
            ids, labels = plain.encode_tagged(tokenizer, [e.tokens for e in sample],
                                              [[tags.index(t) for t in e.tags] for e in sample])
            num_labels = len(tags)
        else:
            classes = sorted({e.label for e in sample})
            ids, labels = plain.encode_texts(tokenizer, [e.text for e in sample],
                                             [classes.index(e.label) for e in sample])
            num_labels = len(classes)
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
        model = plain.model(model_dir, task, num_labels)
        data = plain.dataset(ids, labels, batch_size=batch_size, bucketed=bucketed, seed=seed)
        return timed_fit(model, data, warmup, steps, tokenizer.cls_token_id, tokenizer.pad_token_id)
    return measure


def tfft_variant(*levers: str) -> Callable:
    """tfft's own pipeline and step (as ``tfft train`` builds them), with ``levers`` switched on; ``model``
    (a checkpoint directory of any family, ``tokenizer`` its own; rows cut at ``max_length``) defaults to
    the default model."""
    def measure(task, sample, *, precision, warmup, steps, batch_size, seed=0, tokenizer, labels, model="default",
                max_length=256):
        attention_dropout = {"no-attention-dropout": 0.0, "attention-dropout": 0.1}  # 0.1: BERT checkpoints' own
        config = TrainConfig(task=task, train="bench", model=model, precision=precision, batch_size=batch_size,
                             epochs=1,
                             xla="xla" in levers, packing=False if "no-packing" in levers else None,
                             attention_dropout=next((attention_dropout[lever] for lever in levers
                                                     if lever in attention_dropout), None))
        config = replace(config, **packing_options(config))  # as `tfft train` resolves packing and attention dropout
        encoding = encode_for_training(tokenizer, sample, labels, max_length=max_length)
        dataset = make_dataset(encoding, batch_size=batch_size, shuffle=True, seed=seed,
                               pad_token_id=tokenizer.pad_token_id,
                               pack_length=pack_length_for(encoding.row_lengths) if config.packing else None).repeat()
        model_config = checkpoint_config(model)
        # The features the family's model takes (DistilBERT, MPNet, DeBERTa-v3: no token types), as `tfft train`.
        dataset = dataset.map(lambda features, targets: (family_of(model_config).model_inputs(model_config, features),
                                                         targets))
        model = create_model(config, labels, len(sample) // batch_size)
        if "xla" in levers:  # compile every bucket's shape before timing
            seen = set()
            for features, targets in dataset.take(200):
                shape = tuple(features["input_ids"].shape)
                if shape not in seen:
                    seen.add(shape)
                    model.train_on_batch(features, targets)
        return timed_fit(model, dataset, warmup, steps, tokenizer.cls_token_id, tokenizer.pad_token_id)
    return measure


VARIANTS = {
    "plain-bucketed": plain_variant(bucketed=True),
    "plain-padded": plain_variant(bucketed=False),
    "tfft": tfft_variant(),
    "tfft+xla": tfft_variant("xla"),
    "tfft+no-attention-dropout": tfft_variant("no-attention-dropout"),
    "tfft+attention-dropout": tfft_variant("attention-dropout"),
    "tfft+no-packing": tfft_variant("no-packing"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="ner,sst2")
    parser.add_argument("--precisions", default="fp32,bf16", help="bf16 is skipped where the hardware lacks it")
    parser.add_argument("--variants", default="tfft", help=f"tfft variants besides the plain baselines: "
                                                           f"{', '.join(v for v in VARIANTS if v.startswith('tfft'))}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--examples", type=int, default=4000, help="training examples sampled from each file")
    args = parser.parse_args()

    precisions = args.precisions.split(",")
    peaks = {"fp32": matmul_peak(tf.float32)}
    if "bf16" in precisions:
        if bf16_matmuls_in_hardware():
            peaks["bf16"] = matmul_peak(tf.bfloat16)
        else:
            print("bf16: skipped, this machine has no bf16 matmul hardware (no AVX-512 BF16 / AMX, no GPU of "
                  "compute capability 8+)")
            precisions.remove("bf16")
    tokenizer = load_tokenizer("default")
    rng = np.random.default_rng(0)
    rows: List[Dict[str, object]] = []
    for name in args.tasks.split(","):
        task, path = TASKS[name]
        if not path.is_file():
            print(f"skip {name}: {path} not found")
            continue
        examples = read_conll(path) if task == "token-classification" else read_table(path, text_column="sentence")
        sample = [examples[i] for i in sorted(rng.choice(len(examples), min(args.examples, len(examples)),
                                                         replace=False))]
        labels = (LabelMap.from_token_examples(sample) if task == "token-classification"
                  else LabelMap.from_text_examples(sample))
        common = dict(warmup=args.warmup, steps=args.steps, batch_size=args.batch_size, tokenizer=tokenizer,
                      labels=labels)
        for precision in precisions:
            baseline = None
            names = ["plain-bucketed"] + (["plain-padded"] if precision == "fp32" else []) + args.variants.split(",")
            for variant in names:
                keras.backend.clear_session()
                keras.utils.set_random_seed(0)
                measured = VARIANTS[variant](task, sample, precision=precision, **common)
                set_precision("fp32")
                baseline = baseline or measured
                rows.append({"task": name, "variant": variant, "precision": precision,
                             **{k: round(v, 2) for k, v in measured.items()},
                             "of_peak": round(measured["useful_flops"] / peaks[precision], 3),
                             "ratio_vs_plain_bucketed": round(measured["sentences_per_s"]
                                                              / baseline["sentences_per_s"], 2)})
                print(json.dumps(rows[-1]), flush=True)

    print("\nmatmul peak: " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    print(f"{'task':6} {'variant':28} {'prec':5} {'sent/s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'vs plain':>8}")
    for r in rows:
        print(f"{r['task']:6} {r['variant']:28} {r['precision']:5} {r['sentences_per_s']:8.1f} "
              f"{r['real_tokens_per_s']:9.0f} {r['useful_flops'] / 1e9:8.0f} {r['of_peak']:8.2f} "
              f"{r['ratio_vs_plain_bucketed']:8.2f}")
    results = {"batch_size": args.batch_size, "steps": args.steps, "matmul_peaks": peaks, "training": rows,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
