"""Side-by-side throughput benchmark: the plain padded-to-128 pipeline vs tfft's, in one run.

    python bench/throughput.py                 # both tasks, fp32 and bf16, prediction, memory
    python bench/throughput.py --steps 20 --tasks ner

Prints a table and one JSON line (prefix ``BENCH_JSON``). Training throughput is measured
over ``--steps`` optimizer steps after ``--warmup`` steps, same model, same data, same
batch size for both pipelines. Useful FLOP/s counts only real (non-padding) tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfft.backend import keras, tf  # noqa: E402
from tfft.config import TrainConfig  # noqa: E402
from tfft.data import LabelMap, read_conll, read_table  # noqa: E402
from tfft.features import encode_for_training  # noqa: E402
from tfft.models import build_model, load_tokenizer, set_precision  # noqa: E402
from tfft.pipeline import make_dataset  # noqa: E402
from tfft.prediction import Predictor  # noqa: E402
from tfft.training.losses import masked_sparse_categorical_crossentropy  # noqa: E402
from tfft.training.model import create_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "ner": ("token-classification", SHARED / "conll2003" / "train.txt"),
    "sst2": ("sequence-classification", SHARED / "sst2" / "train.tsv"),
}


class StepTimer(keras.callbacks.Callback):
    """Wall time of the steps after warm-up, and the real tokens they processed."""

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
    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a)
    result.numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def model_flops_per_token(model) -> float:
    """Training FLOPs per real token: 6 x parameters used in matmuls (forward 2, backward 4).

    Embedding lookups are not matmuls and are left out; attention scores are counted at
    the average sequence length separately by the caller's token count (small here).
    """
    matmul_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables
                        if len(v.shape) == 2 and "embeddings" not in v.name)
    return 6.0 * matmul_params


def plain_dataset(tokenizer, examples, labels, batch_size, seed):
    """The seed-style pipeline: every example padded to 128 tokens, shuffled, batched."""
    encoding = encode_for_training(tokenizer, examples, labels, max_length=128)
    return make_dataset(encoding, batch_size=batch_size, shuffle=True, seed=seed, pad_to_length=128), encoding


def measure_training(task, examples, labels, tokenizer, *, pipeline, precision, batch_size, steps, warmup, seed=0,
                     batch_tokens=None, xla=False):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    config = TrainConfig(task=task, train="bench", precision=precision, batch_size=batch_size, epochs=1,
                         learning_rate=5e-5, batch_tokens=batch_tokens, xla=xla)
    if pipeline == "plain":
        set_precision("fp32")
        dataset, encoding = plain_dataset(tokenizer, examples, labels, batch_size, seed)
        model = build_model(task, labels, "default")
        model.compile(optimizer=keras.optimizers.AdamW(5e-5, weight_decay=0.01),
                      loss=masked_sparse_categorical_crossentropy)
    else:
        encoding = encode_for_training(tokenizer, examples, labels, max_length=256)
        dataset = make_dataset(encoding, batch_size=batch_size, shuffle=True, seed=seed, batch_tokens=batch_tokens)
        model = create_model(config, labels, int(dataset.cardinality()))
        if batch_tokens:  # rows per step vary: count them from the pipeline's real batch sizes
            batch_size = len(encoding.row_lengths) / int(dataset.cardinality())
        if xla:  # compile every batch shape before timing (a bounded set, thanks to the buckets)
            seen = set()
            for features, targets in dataset:
                shape = tuple(features["input_ids"].shape)
                if shape not in seen:
                    seen.add(shape)
                    model.train_on_batch(features, targets)
    total = warmup + steps
    timer = StepTimer(warmup)
    model.fit(dataset.repeat().take(total), epochs=1, steps_per_epoch=total, callbacks=[timer], verbose=0)
    seconds = timer.finished - timer.started
    set_precision("fp32")
    # Batches are uniform samples of the data, so real tokens per sentence is the data's mean length.
    real_tokens = steps * batch_size * float(encoding.row_lengths.mean())
    return {
        "sentences_per_s": steps * batch_size / seconds,
        "real_tokens_per_s": real_tokens / seconds,
        "useful_flops": real_tokens * model_flops_per_token(model) / seconds,
    }


def measure_prediction(tokenizer, labels, sentences, precision, batch_size=64, single=100):
    """``Predictor`` (what ``tfft predict`` runs) on raw sentences: batched rate and single-sentence latency.

    The model is the untrained default classifier: speed does not depend on the weights.
    """
    set_precision(precision)
    predictor = Predictor(build_model("token-classification", labels, "default"), tokenizer,
                          "token-classification", labels, batch_size=batch_size)
    predictor.predict(sentences[:batch_size])
    start = time.perf_counter()
    predictor.predict(sentences)
    batch_rate = len(sentences) / (time.perf_counter() - start)
    latencies = []
    for sentence in sentences[:single]:
        start = time.perf_counter()
        predictor.predict([sentence])
        latencies.append((time.perf_counter() - start) * 1000)
    set_precision("fp32")
    return {"precision": precision, "batch_sentences_per_s": batch_rate,
            "latency_p50_ms": float(np.percentile(latencies, 50)),
            "latency_p95_ms": float(np.percentile(latencies, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="ner,sst2")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="tfft pipeline variants to measure: fp32, bf16, and either with +xla (e.g. fp32+xla)")
    parser.add_argument("--batch-tokens", type=int, default=0,
                        help="also measure tfft bf16 with token-budget batches of this many tokens (0: skip)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--examples", type=int, default=4000, help="training examples sampled from each file")
    parser.add_argument("--skip-prediction", action="store_true", help="skip the prediction figures")
    args = parser.parse_args()

    tokenizer = load_tokenizer("default")
    results = {"batch_size": args.batch_size, "steps": args.steps,
               "matmul_peak_fp32": matmul_peak(tf.float32), "matmul_peak_bf16": matmul_peak(tf.bfloat16)}
    rows = []
    rng = np.random.default_rng(0)
    for name in args.tasks.split(","):
        task, path = TASKS[name]
        if not path.is_file():
            print(f"skip {name}: {path} not found")
            continue
        examples = read_conll(path) if task == "token-classification" else read_table(path, text_column="sentence")
        examples = [examples[i] for i in sorted(rng.choice(len(examples), min(args.examples, len(examples)), replace=False))]
        labels = (LabelMap.from_token_examples(examples) if task == "token-classification"
                  else LabelMap.from_text_examples(examples))
        common = dict(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)
        plain = measure_training(task, examples, labels, tokenizer, pipeline="plain", precision="fp32", **common)
        rows.append((name, "plain padded-128 fp32", plain, 1.0))
        for variant in args.precisions.split(","):
            precision, _, xla = variant.partition("+")
            fast = measure_training(task, examples, labels, tokenizer, pipeline="tfft", precision=precision,
                                    xla=xla == "xla", **common)
            rows.append((name, f"tfft bucketed {variant}", fast, fast["sentences_per_s"] / plain["sentences_per_s"]))
        if args.batch_tokens:
            budget = measure_training(task, examples, labels, tokenizer, pipeline="tfft", precision="bf16",
                                      batch_tokens=args.batch_tokens, **common)
            rows.append((name, f"tfft bf16 {args.batch_tokens} tok/batch", budget,
                         budget["sentences_per_s"] / plain["sentences_per_s"]))
    results["training"] = [
        {"task": t, "pipeline": p, **{k: round(v, 2) for k, v in m.items()}, "ratio_vs_plain": round(r, 2)}
        for t, p, m, r in rows
    ]
    conll_valid = SHARED / "conll2003" / "valid.txt"
    if not args.skip_prediction and conll_valid.is_file():
        valid = read_conll(conll_valid)
        sentences = [" ".join(e.tokens) for e in valid]
        labels = LabelMap.from_token_examples(valid)
        results["prediction"] = [measure_prediction(tokenizer, labels, sentences, precision)
                                 for precision in dict.fromkeys(v.partition("+")[0] for v in args.precisions.split(","))]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nmatmul peak: fp32 {results['matmul_peak_fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {results['matmul_peak_bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{'task':6} {'pipeline':26} {'sent/s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} {'ratio':>6}")
    for t, p, m, r in rows:
        peak = results["matmul_peak_bf16"] if "bf16" in p else results["matmul_peak_fp32"]
        print(f"{t:6} {p:26} {m['sentences_per_s']:8.1f} {m['real_tokens_per_s']:9.0f} "
              f"{m['useful_flops'] / 1e9:8.0f} {m['useful_flops'] / peak:8.2f} {r:6.2f}")
    for p in results.get("prediction", []):
        print(f"tfft predict {p['precision']} on {len(sentences)} CoNLL sentences: {p['batch_sentences_per_s']:.0f} "
              f"sentences/s batched (length-sorted, batch 64); single sentence p50 {p['latency_p50_ms']:.1f} ms, "
              f"p95 {p['latency_p95_ms']:.1f} ms")
    print(f"peak resident memory: {results['peak_rss_mb']:.0f} MB")
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
