"""Prediction throughput on raw text: ``tfft predict``'s ``Predictor`` against the Hugging Face TF
token-classification pipeline, on the same model and the same sentences, in one run.

    python bench/prediction.py                       # the 3,250 CoNLL-2003 validation sentences
    python bench/prediction.py --run runs/conll      # a trained run instead of the untrained default model

Both get each sentence as one string (its CoNLL tokens joined by spaces, so the two word
splitters see the same words) and return entities with their character offsets: tfft's
natural word rule and decoding, the pipeline's ``aggregation_strategy="first"``. Speed does not
depend on the weights, so without ``--run`` the untrained default classifier is used. Prints
sentences/s for each (best of ``--repeats`` passes) and one JSON line (``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfft.backend import keras  # noqa: E402
from tfft.data import LabelMap, read_conll  # noqa: E402
from tfft.models import build_model, load_tokenizer  # noqa: E402
from tfft.prediction import Predictor  # noqa: E402

CONLL_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "valid.txt"


def best_rate(predict, sentences, repeats: int) -> float:
    predict(sentences[:64])  # tracing and warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict(sentences)
        best = min(best, time.perf_counter() - start)
    return len(sentences) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(CONLL_VALID), help="a CoNLL file whose sentences are predicted")
    parser.add_argument("--run", help="a tfft run directory (default: the untrained default model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found")
    from transformers import TokenClassificationPipeline  # pipeline() itself needs torch in transformers 4.54

    examples = read_conll(args.data)
    sentences = [" ".join(e.tokens) for e in examples]
    keras.mixed_precision.set_global_policy("float32")
    if args.run:
        predictor = Predictor.from_run_dir(args.run, batch_size=args.batch_size)
    else:
        labels = LabelMap.from_token_examples(examples)
        model = build_model("token-classification", labels, "default")
        predictor = Predictor(model, load_tokenizer("default"), "token-classification", labels,
                              batch_size=args.batch_size)
    hf = TokenClassificationPipeline(model=predictor.model, tokenizer=predictor.tokenizer, framework="tf",
                                     aggregation_strategy="first", batch_size=args.batch_size)
    results = {"sentences": len(sentences), "batch_size": args.batch_size,
               "tfft_predict": best_rate(predictor.predict, sentences, args.repeats),
               "hf_pipeline": best_rate(hf, sentences, args.repeats)}
    results["ratio"] = results["tfft_predict"] / results["hf_pipeline"]
    print(f"{len(sentences)} sentences, batch {args.batch_size}: tfft predict {results['tfft_predict']:.0f} "
          f"sentences/s, Hugging Face TF pipeline {results['hf_pipeline']:.0f} sentences/s "
          f"({results['ratio']:.2f}x)")
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
