"""Quantized exports side by side: size, latency, throughput and validation score of each format, in one run.

    .venv/bin/python bench/quantization.py --ner-run runs/ner --sentiment-run runs/sst2
    .venv/bin/python bench/quantization.py --ner-run runs/ner --calls 100 --max-examples 1000

For each trained run given, the run is exported as ``tfft export`` does, into a temporary
directory: the SavedModel in float32 (the reference) and in bfloat16, and TensorFlow Lite
with float16 and dynamic-range int8 weights. Every format then predicts through the same
Python code -- :class:`tfft.prediction.Predictor`'s encoding, windows and decoding, the
SavedModels through their ``predict_ids`` signature, the TFLite files through
:class:`tfft.export.tflite_predictor.TFLitePredictor` as ``tfft predict --tflite`` loads them
-- so only the model differs:

* size: the SavedModel directory (graph, weights, its small vocabulary asset) or the ``.tflite`` file;
* p50 latency of ``predict([sentence])``, tokenization and decoding included, over ``--calls``
  validation sentences after ``--warmup``, the formats taking turns on each sentence so that
  load from other jobs on the machine affects them alike;
* throughput: sentences per second of ``predict`` on ``--batch-sentences`` validation
  sentences in batches of ``--batch-size``, the formats again taking turns, ``--repeats`` times;
* the validation score (NER: entity F1; classification: accuracy) on the validation file, the
  same encoded rows scored by the code ``tfft evaluate`` uses.

The run directory itself (``tfft predict RUN_DIR``: the Keras model, tokenization and
decoding in Python) is measured beside the exports. Prints a table, dynamic-int8's ratios to
each like-for-like baseline (the float32 SavedModel, the run directory, TFLite float16) and one
JSON line (``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfft.backend import tf  # noqa: E402
from tfft.data import TOKEN_CLASSIFICATION  # noqa: E402
from tfft.export.saved_model import export_run  # noqa: E402
from tfft.export.tflite import export_tflite  # noqa: E402
from tfft.export.tflite_predictor import TFLitePredictor  # noqa: E402
from tfft.features import encode_for_inference  # noqa: E402
from tfft.inference import predict_with  # noqa: E402
from tfft.metrics import score_predictions  # noqa: E402
from tfft.models import label_map_of  # noqa: E402
from tfft.prediction import Predictor  # noqa: E402
from tfft.data.natural import natural_text  # noqa: E402
from tfft.run_dir import MODEL_SUBDIR, load_run, load_run_config, read_config_examples  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VALIDATION = {"ner": SHARED / "conll2003" / "valid.txt", "sentiment": SHARED / "sst2" / "dev.tsv"}
# Row name: (tfft export --format, its --precision or --quantize).
RUN_DIRECTORY = "run directory"  # tfft predict RUN_DIR: the Keras model, float32
FORMATS = {"SavedModel fp32": ("saved-model", "fp32"), "SavedModel bf16": ("saved-model", "bf16"),
           "TFLite float16": ("tflite", "float16"), "TFLite dynamic-int8": ("tflite", "dynamic-int8")}


class SignaturePredictor(Predictor):
    """The run's predictor with its forward step in a loaded SavedModel's ``predict_ids`` signature."""

    def forward(self):
        return self.model


def saved_model_forward(path: Path) -> Callable[[Dict[str, np.ndarray]], np.ndarray]:
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["predict_ids"]

    def forward(features: Dict[str, np.ndarray]) -> np.ndarray:
        return signature(**{name: tf.constant(value) for name, value in features.items()})["probabilities"].numpy()

    forward.loaded = loaded  # keeps the variables alive as long as the function
    return forward


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_formats(run_dir: Path, scratch: Path, batch_size: int) -> Dict[str, Dict[str, object]]:
    """Every format of one run: its predictor and its size on disk."""
    config = load_run_config(run_dir)
    _, model, tokenizer = load_run(run_dir, precision="fp32")
    label_map = label_map_of(model)
    # What `tfft predict RUN` runs: the Keras model itself, the baseline a user compares an export with.
    formats = {RUN_DIRECTORY: {"predictor": Predictor.from_run_dir(run_dir, batch_size=batch_size),
                               "bytes": directory_bytes(Path(run_dir) / MODEL_SUBDIR)}}
    for name, (kind, setting) in FORMATS.items():
        if kind == "saved-model":
            path = export_run(run_dir, "model", export_dir=scratch / setting, precision=setting)
            predictor = SignaturePredictor.from_config(config, saved_model_forward(path), tokenizer, label_map,
                                                       batch_size)
            formats[name] = {"predictor": predictor, "bytes": directory_bytes(path)}
        else:
            path = export_tflite(run_dir, "model", setting, export_dir=scratch / "tflite")
            formats[name] = {"predictor": TFLitePredictor.from_file(path, batch_size=batch_size),
                             "bytes": path.stat().st_size}
    return formats


def validation_score(predictor: Predictor, examples, encoding) -> Dict[str, float]:
    """The validation scores ``tfft evaluate`` computes, from the shared encoding through this format."""
    token_task = predictor.task == TOKEN_CLASSIFICATION
    true_labels = [list(e.tags) for e in examples] if token_task else [e.label for e in examples]
    probabilities = predict_with(predictor.forward(), encoding,
                                 words_per_example=[len(t) for t in true_labels] if token_task else None,
                                 batch_size=predictor.batch_size, pad_token_id=predictor.tokenizer.pad_token_id)
    return score_predictions(true_labels, probabilities, predictor.label_map)


def take_turns(formats: Dict[str, Dict], inputs: List[List[str]], warmup: int) -> Dict[str, np.ndarray]:
    """Seconds per ``predict`` call of every format on every input after the first ``warmup``."""
    times: Dict[str, List[float]] = {name: [] for name in formats}
    for i, texts in enumerate(inputs):
        for name, measured in formats.items():
            start = time.perf_counter()
            measured["predictor"].predict(texts)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: np.asarray(values) for name, values in times.items()}


def measure_task(task: str, run_dir: Path, data: Path, args, scratch: Path) -> Dict[str, Dict[str, float]]:
    config = load_run_config(run_dir)
    progress(f"{task}: exporting {run_dir} as {', '.join(FORMATS)}")
    formats = export_formats(run_dir, scratch / task, args.batch_size)
    reference = formats["SavedModel fp32"]["predictor"]
    examples = read_config_examples(config, str(data), args.max_examples)
    encoding = encode_for_inference(reference.tokenizer, examples, reference.window_length, reference.stride,
                                    word_inputs=reference.word_inputs)
    texts = [natural_text(e.tokens)[0] if task == "ner" else e.text for e in examples]  # as people write
    sentences = itertools.cycle(texts)
    progress(f"{task}: timing {args.calls} single sentences and {args.repeats} batches of {args.batch_sentences} "
             "per format")
    single = take_turns(formats, [[next(sentences)] for _ in range(args.warmup + args.calls)], args.warmup)
    batch = take_turns(formats, [texts[:args.batch_sentences]] * (1 + args.repeats), 1)
    metric = "f1" if task == "ner" else "accuracy"
    results = {}
    for name, measured in formats.items():
        progress(f"{task}: scoring {name} on {len(examples)} validation examples")
        scores = validation_score(measured["predictor"], examples, encoding)
        results[name] = {"megabytes": measured["bytes"] / 1e6, "p50_ms": 1e3 * float(np.median(single[name])),
                         "sentences_per_s": min(args.batch_sentences, len(texts)) / float(np.median(batch[name])),
                         "metric": metric, "score": scores[metric], "num_examples": len(examples)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ner-run", type=Path, help="a token-classification run directory")
    parser.add_argument("--ner-data", type=Path, default=VALIDATION["ner"], help="its validation file (CoNLL)")
    parser.add_argument("--sentiment-run", type=Path, help="a sequence-classification run directory")
    parser.add_argument("--sentiment-data", type=Path, default=VALIDATION["sentiment"], help="its validation file")
    parser.add_argument("--calls", type=int, default=200, help="timed single-sentence calls per format")
    parser.add_argument("--warmup", type=int, default=20, help="untimed single-sentence calls per format first")
    parser.add_argument("--batch-size", type=int, default=64, help="prediction batch size")
    parser.add_argument("--batch-sentences", type=int, default=512, help="sentences per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed throughput measurements per format")
    parser.add_argument("--max-examples", type=int, default=None, help="score only the first N validation examples")
    args = parser.parse_args()
    runs = {task: (run, data) for task, run, data in (("ner", args.ner_run, args.ner_data),
                                                      ("sentiment", args.sentiment_run, args.sentiment_data)) if run}
    if not runs:
        parser.error("give --ner-run and/or --sentiment-run")
    for task, (run, data) in runs.items():
        load_run_config(run)
        if not data.is_file():
            parser.error(f"{data}: no such validation file (--{task}-data)")

    info = {"cpu": _cpu_name(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "load_average_before": os.getloadavg()[0], "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="tfft-quantization-bench-") as scratch:
        for task, (run, data) in runs.items():
            info["tasks"][task] = measure_task(task, run, data, args, Path(scratch))
    info["load_average_after"] = os.getloadavg()[0]

    print(f"\n{info['cpu']}, {info['cpus']} CPUs, TensorFlow {info['tensorflow']}; load average before/after "
          f"{info['load_average_before']:.2f} / {info['load_average_after']:.2f}")
    print(f"{'task':10} {'format':20} {'MB':>7} {'p50 ms':>8} {f'sent/s @{args.batch_size}':>11} {'val score':>16}")
    for task, results in info["tasks"].items():
        for name, r in results.items():
            print(f"{task:10} {name:20} {r['megabytes']:7.1f} {r['p50_ms']:8.2f} {r['sentences_per_s']:11.0f} "
                  f"{r['metric']:>8} {100 * r['score']:7.2f}")
    for task, results in info["tasks"].items():
        int8 = results["TFLite dynamic-int8"]
        # Like with like: the float32 SavedModel and run directory, and TFLite float16 (same interpreter).
        for baseline in ("SavedModel fp32", RUN_DIRECTORY, "TFLite float16"):
            other = results[baseline]
            checks = {"size_ratio": int8["megabytes"] / other["megabytes"],
                      "p50_ratio": int8["p50_ms"] / other["p50_ms"],
                      "throughput_ratio": int8["sentences_per_s"] / other["sentences_per_s"],
                      "score_points": 100 * (int8["score"] - other["score"])}
            info.setdefault("int8_vs", {}).setdefault(task, {})[baseline] = checks
            print(f"{task}: dynamic-int8 vs {baseline}: size {checks['size_ratio']:.2f}x, p50 "
                  f"{checks['p50_ratio']:.2f}x, throughput {checks['throughput_ratio']:.2f}x, {other['metric']} "
                  f"{checks['score_points']:+.2f} points")
    print("BENCH_JSON " + json.dumps(info))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
