"""Raw-text serving per tokenizer kind: the SavedModel's NER graph at the default model's size, side by side.

    .venv/bin/python bench/family_serving.py                 # WordPiece, byte-level BPE, SentencePiece
    .venv/bin/python bench/family_serving.py --calls 50 --batches 5

Why: a SavedModel tokenizes in its graph (core TF ops), and the issue's bar is that no kind's
tokenizer costs more than the encoder it feeds. For one family of each kind (BERT, RoBERTa,
XLM-R) the test checkpoint of tests/families.py is built at the default model's size (6 layers,
hidden 384, random weights: timing only), and the export's ``serving_default`` function
(:class:`tfft.export.saved_model.ServingModule`, traced as ``tfft export`` traces it) runs on
sample sentences: single-sentence p50, batch-64 throughput, the in-graph tokenizer alone
(``tokenize`` + ``pack``) and the encoder alone on the same ids, and the resident memory a
request of 64 sentences adds at its peak: the first one to a process warmed on single sentences,
and the median once batches have run (TensorFlow's allocator then reuses what it holds). Prints a table and ``BENCH_JSON``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from tfft.backend import tf  # noqa: E402
from graph_tokenizers import p50_ms  # noqa: E402
from memory import memory_kib  # noqa: E402

KINDS = {"WordPiece": "bert", "byte-level BPE": "roberta", "SentencePiece": "xlm-roberta"}
DEFAULT_SIZE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _request_peak_mb(function, request) -> float:
    """Resident memory one call adds at its peak: VmHWM after it (reset first, as bench/serving_memory.py
    does) less VmRSS before it."""
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_kib("VmRSS")
    function(request)
    return (memory_kib("VmHWM") - before) / 1024


def serving_functions(family: str, directory: Path):
    """(serve, tokenize, encode) of ``family``'s default-sized checkpoint: the export's raw-text NER function,
    its in-graph tokenizer alone and the encoder alone on packed ids."""
    import transformers

    import families
    from tfft.data import TOKEN_CLASSIFICATION
    from tfft.export.graph_tokenizers import graph_tokenizer
    from tfft.export.saved_model import ServingModule
    from tfft.lean_bert import inference_logits
    from tfft.models import load_tokenizer
    from tfft.words import NATURAL

    families.HIDDEN.update(DEFAULT_SIZE)
    families.write_family_checkpoint(family, directory)
    tokenizer = graph_tokenizer(directory, load_tokenizer(str(directory)).backend_tokenizer.to_str())
    model_class = families.SPECS[family].model_class.replace("Model", "ForTokenClassification")
    model = getattr(transformers, model_class).from_pretrained(
        str(directory), id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    module = ServingModule(model, tokenizer, TOKEN_CLASSIFICATION, LABELS, families.WINDOW, assets={})
    text = [tf.TensorSpec([None], tf.string)]
    serve = tf.function(lambda texts: module.tag(texts, NATURAL), input_signature=text)
    tokenize = tf.function(lambda texts: tokenizer.pack(tokenizer.tokenize(texts)[0], families.WINDOW),
                           input_signature=text)
    example = tokenize(tf.constant(["a"]))  # one trace for every batch shape, as in the export
    encode = tf.function(lambda features: inference_logits(model, features),
                         input_signature=[{name: tf.TensorSpec([None, None], value.dtype)
                                           for name, value in example.items()}])
    return serve, tokenize, encode


def main() -> None:
    from families import sample_texts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="timed single-sentence calls per function")
    parser.add_argument("--batches", type=int, default=10, help="timed batch-64 calls per function")
    args = parser.parse_args()

    sentences = [s for s in dict.fromkeys(sample_texts()) if 5 < len(s.split()) < 30][:256]
    singles = [tf.constant([s]) for s in sentences]
    batches = [tf.constant(sentences[i:i + 64]) for i in range(0, len(sentences) - 63, 64)]
    results = {}
    print(f"{'kind (family)':30s} {'p50 1 text':>10s} {'tok 1':>7s} {'enc 1':>7s} {'texts/s @64':>11s} "
          f"{'tok 64':>7s} {'enc 64':>7s} {'MB 1st @64':>11s} {'MB @64':>10s}   (ms unless said)")
    for kind, family in KINDS.items():
        with tempfile.TemporaryDirectory() as scratch:
            serve, tokenize, encode = serving_functions(family, Path(scratch) / family)
        single_ids = [tokenize(s) for s in singles[:32]]
        batch_ids = [tokenize(b) for b in batches]
        for warm in singles[:3]:
            serve(warm)
        # The first batch of 64 to a server warmed on single sentences: what its buffers add at their peak.
        first_batch_peak = _request_peak_mb(serve, batches[0])
        for function, inputs in ((tokenize, singles), (encode, single_ids), (serve, batches),
                                 (tokenize, batches), (encode, batch_ids)):
            for warm in inputs[:3]:
                function(warm)
        row = {"serve_p50_ms": p50_ms(serve, singles, args.calls),
               "tokenizer_p50_ms": p50_ms(tokenize, singles, args.calls),
               "encoder_p50_ms": p50_ms(encode, single_ids, args.calls)}
        batch_ms = p50_ms(serve, batches, args.batches)
        row.update(serve_batch64_texts_per_s=64_000 / batch_ms,
                   first_batch64_peak_mb=first_batch_peak,
                   warm_batch64_peak_mb=float(np.median([_request_peak_mb(serve, b) for b in batches])),
                   tokenizer_batch64_ms=p50_ms(tokenize, batches, args.batches),
                   encoder_batch64_ms=p50_ms(encode, batch_ids, args.batches))
        results[f"{kind} ({family})"] = row
        print(f"{kind + ' (' + family + ')':30s} {row['serve_p50_ms']:10.2f} {row['tokenizer_p50_ms']:7.2f} "
              f"{row['encoder_p50_ms']:7.2f} {row['serve_batch64_texts_per_s']:11.0f} "
              f"{row['tokenizer_batch64_ms']:7.1f} {row['encoder_batch64_ms']:7.1f} "
              f"{row['first_batch64_peak_mb']:11.1f} {row['warm_batch64_peak_mb']:10.1f}", flush=True)
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
