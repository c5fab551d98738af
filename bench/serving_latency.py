"""Serving latency: raw text into the exported graph vs Python-side tokenization + token ids, in one run.

    .venv/bin/python bench/serving_latency.py                    # both tasks, default model
    .venv/bin/python bench/serving_latency.py --tasks sequence-classification --calls 500

Why: the exported ``serving_default`` tokenizes inside the graph (core TF ops, so a stock
TF Serving binary runs it). The question is whether that costs latency compared with the
usual set-up, a client that tokenizes with the Hugging Face fast tokenizer and calls a
token-id signature. All paths use the same (untrained; latency does not depend on the
weights) default model, loaded with ``tf.saved_model.load`` in this process:

* (a) tfft's ``serving_default(text=[sentence])``, returning labels / tags and their offsets;
* (b) the plain export users make today, ``save_pretrained(saved_model=True)`` of the
  transformers model: ``tokenizer(sentence)``, its ids ``serving_default``, an argmax in NumPy;
* (c) ``tokenizer(sentence)`` then tfft's ``predict_ids(...)`` then the argmax: the same as
  (b) with tfft's leaner model graph, which tells how much of (a) - (b) is tokenization.

The paths take turns on each input (sentences of the sample data's validation file, in
turn), so load from other jobs on the machine affects both alike: p50 and p95 over
``--calls`` single-sentence calls after ``--warmup``, then throughput over ``--batches``
batches of ``--batch-size`` sentences. The two tokenizers are also timed alone, which tells
how much of a difference is tokenization. Prints a table and one JSON line (``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfft.backend import keras, tf  # noqa: E402
from tfft.data import TOKEN_CLASSIFICATION, LabelMap, read_conll  # noqa: E402
from tfft.export.saved_model import ServingModule  # noqa: E402
from tfft.export.tokenizer import InGraphBertTokenizer  # noqa: E402
from tfft.features import inference_length  # noqa: E402
from tfft.models import build_model, default_model_dir, load_tokenizer  # noqa: E402

SENTENCES = Path(__file__).resolve().parents[1] / "examples" / "data" / "ner_valid.txt"
LABELS = {
    "sequence-classification": ["negative", "positive"],
    "token-classification": ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"],
}


def export_default_model(task: str, directory: Path) -> Tuple[Path, Path]:
    """Export an untrained default-model classifier twice: as ``tfft export`` does, and plainly.

    Returns the tfft SavedModel and the plain one (``save_pretrained(saved_model=True)``).
    """
    keras.mixed_precision.set_global_policy("float32")
    labels = LABELS[task]
    shapes = task == TOKEN_CLASSIFICATION  # as `tfft train` defaults for the uncased default model
    model = build_model(task, LabelMap(labels), "default", word_shapes=shapes)
    model_dir = default_model_dir()
    max_length = inference_length(load_tokenizer(str(model_dir)))
    module = ServingModule(model, InGraphBertTokenizer.from_pretrained_dir(model_dir), task, labels, max_length,
                           assets={"vocab": str(model_dir / "vocab.txt")}, word_shapes=shapes)
    path = directory / task
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    model.save_pretrained(str(directory / f"{task}-plain"), saved_model=True)
    return path, directory / f"{task}-plain" / "saved_model" / "1"


def raw_text_call(serve) -> Callable[[List[str]], object]:
    """Path (a): strings in, the signature's decoded outputs out."""
    def call(texts: List[str]):
        return {name: value.numpy() for name, value in serve(text=tf.constant(texts)).items()}

    return call


def token_ids_call(predict_ids, tokenizer) -> Callable[[List[str]], object]:
    """Paths (b) and (c): Python-side fast tokenizer, then a token-id signature, then the argmax."""
    max_length = inference_length(tokenizer)

    def call(texts: List[str]):
        ids = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        names = ("input_ids", "attention_mask", "token_type_ids")
        outputs = predict_ids(**{name: tf.constant(ids[name], tf.int32) for name in names})
        return np.argmax(outputs["logits"].numpy(), axis=-1)

    return call


def alternate(paths: Dict[str, Callable], inputs: Sequence[List[str]], warmup: int) -> Dict[str, np.ndarray]:
    """Seconds per call of every path on every input after the first ``warmup`` inputs.

    The paths take turns on each input, so that load from other jobs on the machine
    affects them alike.
    """
    times: Dict[str, List[float]] = {name: [] for name in paths}
    for i, texts in enumerate(inputs):
        for name, call in paths.items():
            start = time.perf_counter()
            call(texts)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: np.asarray(values) for name, values in times.items()}


def in_graph_tokenizer_call(model_dir: Path, max_length: int) -> Callable[[List[str]], object]:
    """The exported graph's tokenization alone (tokenize + pack), to tell its share of path (a)."""
    tokenizer = InGraphBertTokenizer.from_pretrained_dir(model_dir)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(text):
        return tokenizer.pack(tokenizer.tokenize(text)[0], max_length)

    return lambda texts: {name: value.numpy() for name, value in tokenize(tf.constant(texts)).items()}


def batches_of(sentences: Sequence[str], size: int, count: int) -> List[List[str]]:
    pool = itertools.cycle(sentences)
    return [list(itertools.islice(pool, size)) for _ in range(count)]


def summary(single: np.ndarray, batch: np.ndarray, batch_size: int) -> Dict[str, float]:
    return {"p50_ms": 1e3 * float(np.percentile(single, 50)), "p95_ms": 1e3 * float(np.percentile(single, 95)),
            "batch_sentences_per_s": batch_size / float(np.mean(batch))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sequence-classification,token-classification",
                        help="comma-separated tasks to measure")
    parser.add_argument("--calls", type=int, default=300, help="timed single-sentence calls per path (at least 200)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed single-sentence calls per path first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per path for throughput")
    args = parser.parse_args()
    if args.calls < 200:
        parser.error("--calls must be at least 200 for a meaningful p95")

    sentences = [" ".join(example.tokens) for example in read_conll(str(SENTENCES))]
    tokenizer = load_tokenizer("default")
    single = batches_of(sentences, 1, args.warmup + args.calls)
    batches = batches_of(sentences, args.batch_size, 1 + args.batches)
    results: Dict[str, object] = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count(),
                                  "devices": [d.device_type for d in tf.config.list_physical_devices()],
                                  "calls": args.calls, "batch_size": args.batch_size, "tasks": {}}
    # Tokenization alone, both ways: how much of any difference is the in-graph tokenizer.
    tokenizers = {"in_graph_tokenizer": in_graph_tokenizer_call(default_model_dir(), inference_length(tokenizer)),
                  "hf_tokenizer": lambda texts: tokenizer(texts, padding=True, truncation=True, return_tensors="np")}
    single_times, batch_times = alternate(tokenizers, single, args.warmup), alternate(tokenizers, batches, 1)
    results["tokenization_only"] = {name: summary(single_times[name], batch_times[name], args.batch_size)
                                    for name in tokenizers}
    with tempfile.TemporaryDirectory(prefix="tfft-serving-bench-") as scratch:
        for task in args.tasks.split(","):
            tfft_export, plain_export = export_default_model(task, Path(scratch))
            loaded, plain = tf.saved_model.load(str(tfft_export)), tf.saved_model.load(str(plain_export))
            paths = {
                "raw_text": raw_text_call(loaded.signatures["serving_default"]),
                "plain_export": token_ids_call(plain.signatures["serving_default"], tokenizer),
                "token_ids": token_ids_call(loaded.signatures["predict_ids"], tokenizer),
            }
            single_times, batch_times = alternate(paths, single, args.warmup), alternate(paths, batches, 1)
            results["tasks"][task] = {name: summary(single_times[name], batch_times[name], args.batch_size)
                                      for name in paths}
    results["load_average_after"] = os.getloadavg()

    print(f"\nload average before/after: {results['load_average_before'][0]:.2f} / "
          f"{results['load_average_after'][0]:.2f} on {results['cpus']} CPUs; devices {results['devices']}")
    print(f"{'task':24} {'path':36} {'p50 ms':>8} {'p95 ms':>8} {f'sent/s @{args.batch_size}':>11}")
    descriptions = {"raw_text": "(a) tfft serving_default, raw text", "plain_export": "(b) HF tokenizer + plain export",
                    "token_ids": "(c) HF tokenizer + tfft predict_ids",
                    "in_graph_tokenizer": "in-graph tokenize + pack only", "hf_tokenizer": "HF fast tokenizer only"}
    rows = [*((task, measured) for task, measured in results["tasks"].items()),
            ("(tokenization)", results["tokenization_only"])]
    for task, measured in rows:
        for name, m in measured.items():
            print(f"{task:24} {descriptions[name]:36} {m['p50_ms']:8.2f} {m['p95_ms']:8.2f} "
                  f"{m['batch_sentences_per_s']:11.0f}")
    tokenize_ms = results["tokenization_only"]["in_graph_tokenizer"]["p50_ms"]
    for task, measured in results["tasks"].items():
        ratio = measured["raw_text"]["p50_ms"] / measured["plain_export"]["p50_ms"]
        batch_ratio = (measured["raw_text"]["batch_sentences_per_s"]
                       / measured["plain_export"]["batch_sentences_per_s"])
        results.setdefault("p50_raw_text_over_plain_export", {})[task] = ratio
        results.setdefault("batch_raw_text_over_plain_export", {})[task] = batch_ratio
        # The graph's p50 split: tokenizing alone; the encoder = (c) less the Rust tokenizer; the rest of (a).
        encoder_ms = measured["token_ids"]["p50_ms"] - results["tokenization_only"]["hf_tokenizer"]["p50_ms"]
        split = {"tokenize_ms": tokenize_ms, "encoder_ms": encoder_ms,
                 "words_and_decoding_ms": measured["raw_text"]["p50_ms"] - tokenize_ms - encoder_ms}
        results.setdefault("raw_text_p50_split", {})[task] = split
        print(f"{task}: p50 (a) / (b) = {ratio:.2f} (target: at most 0.75); batch (a) / (b) = {batch_ratio:.2f} "
              f"(target: at least 1.5); (a) p50 split: tokenize {split['tokenize_ms']:.2f} ms, encoder "
              f"{split['encoder_ms']:.2f} ms, words and decoding {split['words_and_decoding_ms']:.2f} ms")
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
