"""Packing and the lean inference pass per encoder family: speed with and without them, side by side in one run.

    .venv/bin/python bench/family_throughput.py                      # every family, CoNLL-2003 sentences
    .venv/bin/python bench/family_throughput.py --families bert,roberta --steps 20

Why: packed training rows (:mod:`tfft.training.packing`) and the lean inference pass
(:mod:`tfft.lean_bert`) were measured on BERT only; ELECTRA, RoBERTa and XLM-R now take them
too, and DistilBERT, MPNet, ALBERT and DeBERTa-v2/v3 fall back. For every family, the test
checkpoint of tests/families.py (its own tokenizer) is built at the default model's size (6
layers, hidden 384, 12 heads, intermediate 1536; ELECTRA's and ALBERT's embeddings 192 wide;
random weights: timing only), and on sentences sampled from CoNLL-2003's training file:

* training sentences/s of an NER step as ``tfft train`` builds it (bench/throughput.py's
  ``tfft`` variant: packed rows without attention dropout) against length buckets
  (``tfft+no-packing``), ``--warmup`` untimed then ``--steps`` timed steps each;
* inference sentences/s on batches of 64 sentences (in sample order, padded to the longest; the
  median batch) and one sentence's p50 (ms), the lean pass against the model's call, both traced
  once, taking turns on each input.

A family that falls back shows one row per measurement and the reason. Prints a table, the
ratios, and one ``BENCH_JSON`` line. Rows are truncated to the test tokenizers' 64 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import families  # noqa: E402  (tests/families.py: the offline checkpoints)
from family_serving import DEFAULT_SIZE  # noqa: E402
from serving_latency import alternate  # noqa: E402
from throughput import SHARED, VARIANTS  # noqa: E402

from tfft.backend import keras, tf  # noqa: E402
from tfft.config import TrainConfig  # noqa: E402
from tfft.data import LabelMap, read_conll  # noqa: E402
from tfft.features import encode_for_training  # noqa: E402
from tfft.families import family_of  # noqa: E402
from tfft.lean_bert import lean_logits, lean_refusal  # noqa: E402
from tfft.models import build_model, checkpoint_config, load_tokenizer  # noqa: E402
from tfft.training.data import packing_options  # noqa: E402

CONLL = SHARED / "conll2003" / "train.txt"


def training_rates(directory: Path, sample, labels: LabelMap, tokenizer, args) -> Dict[str, float]:
    """Training sentences/s on packed rows (where the family packs) and on length buckets, in turn."""
    common = dict(precision="fp32", warmup=args.warmup, steps=args.steps, batch_size=args.batch_size,
                  tokenizer=tokenizer, labels=labels, model=str(directory), max_length=families.WINDOW)
    packs = packing_options(TrainConfig(task="token-classification", train="bench", model=str(directory)))["packing"]
    rates = {}
    for cell, variant in ((("packed", "tfft"),) if packs else ()) + (("buckets", "tfft+no-packing"),):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        rates[cell] = VARIANTS[variant]("token-classification", sample, **common)["sentences_per_s"]
    return rates


def padded_batches(encoding, size: int) -> List[Dict[str, np.ndarray]]:
    """The encoding's rows in order, ``size`` a batch, each padded to its longest row (``input_ids`` 0-padded
    here; the caller sets the padding id)."""
    starts = encoding.row_starts()
    batches = []
    for first in range(0, encoding.num_rows - size + 1, size):
        lengths = encoding.row_lengths[first:first + size]
        features = {name: np.zeros((size, int(lengths.max())), np.int32)
                    for name in ("input_ids", "attention_mask", "token_type_ids")}
        for row, (start, length) in enumerate(zip(starts[first:first + size], lengths)):
            features["input_ids"][row, :length] = encoding.input_ids[start:start + length]
            features["token_type_ids"][row, :length] = encoding.token_type_ids[start:start + length]
            features["attention_mask"][row, :length] = 1
        batches.append(features)
    return batches


def inference_rates(directory: Path, encoding, labels: LabelMap, args) -> Dict[str, Dict[str, float]]:
    """Batch-64 sentences/s and one sentence's p50 ms through the lean pass (where it applies) and the model's call."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model("token-classification", labels, str(directory))
    family = family_of(model)
    pad = model.config.pad_token_id or 0

    def model_features(batch):
        batch = dict(batch, input_ids=np.where(batch["attention_mask"] == 1, batch["input_ids"], pad))
        return {name: tf.constant(value) for name, value in family.model_inputs(model.config, batch).items()}

    batches = [model_features(b) for b in padded_batches(encoding, 64)[:args.batches]]
    singles = [model_features(b) for b in padded_batches(encoding, 1)[:args.calls]]
    signature = [{name: tf.TensorSpec([None, None], tf.int32) for name in batches[0]}]
    paths = {"call": tf.function(lambda f: model(f, training=False).logits, input_signature=signature)}
    if lean_refusal(model) is None:
        paths["lean"] = tf.function(lambda f: lean_logits(model, f), input_signature=signature)
    # The paths take turns on each input (serving_latency.alternate), so other jobs' load hits them alike.
    batch_seconds = alternate(paths, batches[:1] + batches, warmup=1)
    single_seconds = alternate(paths, singles[:3] + singles, warmup=3)
    return {name: {"batch64_sentences_per_s": 64 / float(np.median(batch_seconds[name])),
                   "single_p50_ms": 1e3 * float(np.median(single_seconds[name]))} for name in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(families.FAMILY_NAMES))
    parser.add_argument("--examples", type=int, default=1000, help="CoNLL-2003 training sentences sampled")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per cell")
    parser.add_argument("--batches", type=int, default=5, help="timed batch-64 calls per path")
    parser.add_argument("--calls", type=int, default=60, help="timed one-sentence calls per path")
    args = parser.parse_args()
    if not CONLL.is_file():
        print(f"skip: {CONLL} not found (the shared CoNLL-2003 data)")
        return

    examples = read_conll(CONLL)
    rng = np.random.default_rng(0)
    sample = [examples[i] for i in sorted(rng.choice(len(examples), min(args.examples, len(examples)),
                                                     replace=False))]
    labels = LabelMap.from_token_examples(sample)
    families.HIDDEN.update(DEFAULT_SIZE)
    results, notes = {}, {}
    for name in args.families.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            directory = families.write_family_checkpoint(name, Path(scratch) / name)
            tokenizer = load_tokenizer(str(directory))
            model_config = checkpoint_config(str(directory))
            family = family_of(model_config)
            notes[name] = {"packed rows": family.packing_refusal(model_config),
                           "lean pass": family.lean_refusal(model_config)}
            encoding = encode_for_training(tokenizer, sample, labels, max_length=families.WINDOW)
            results[name] = {"training": training_rates(directory, sample, labels, tokenizer, args),
                             "inference": inference_rates(directory, encoding, labels, args)}
        print(json.dumps({name: results[name]}), flush=True)

    print(f"\n{'family':12s} {'train sent/s':>22s} {'ratio':>6s} {'infer sent/s @64':>22s} {'ratio':>6s} "
          f"{'1 sentence p50 ms':>20s} {'ratio':>6s}")
    print(f"{'':12s} {'packed':>10s} {'buckets':>11s} {'':6s} {'lean':>10s} {'call':>11s} {'':6s} "
          f"{'lean':>9s} {'call':>10s}")
    for name, row in results.items():
        train, infer = row["training"], row["inference"]
        packed, lean = train.get("packed"), infer.get("lean")
        call = infer["call"]
        cells = [f"{packed:10.1f}" if packed else f"{'–':>10s}", f"{train['buckets']:11.1f}",
                 f"{packed / train['buckets']:6.2f}" if packed else f"{'':6s}",
                 f"{lean['batch64_sentences_per_s']:10.1f}" if lean else f"{'–':>10s}",
                 f"{call['batch64_sentences_per_s']:11.1f}",
                 f"{lean['batch64_sentences_per_s'] / call['batch64_sentences_per_s']:6.2f}" if lean else f"{'':6s}",
                 f"{lean['single_p50_ms']:9.2f}" if lean else f"{'–':>9s}", f"{call['single_p50_ms']:10.2f}",
                 f"{call['single_p50_ms'] / lean['single_p50_ms']:6.2f}" if lean else f"{'':6s}"]
        print(f"{name:12s} " + " ".join(cells))
    for name, why in notes.items():
        for what, reason in why.items():
            if reason:
                print(f"{name}, {what} off: {reason}")
    print("BENCH_JSON " + json.dumps({"batch_size": args.batch_size, "steps": args.steps, "examples": args.examples,
                                      "size": DEFAULT_SIZE, "results": results, "fallbacks": notes}))


if __name__ == "__main__":
    main()
