"""In-graph tokenizers per kind: time per sentence and per batch beside the encoder's, in one run.

    .venv/bin/python bench/graph_tokenizers.py                  # all kinds, tiny and base-sized encoder
    .venv/bin/python bench/graph_tokenizers.py --calls 50 --no-base

Why: a SavedModel tokenizes raw text in its graph (core TF ops). The issue's bar is that the
tokenizer must not cost more than the encoder it feeds. Each kind's tokenizer (trained here on
the sample data, as in tests/test_graph_tokenizers.py) runs traced as the export runs it
(``tokenize`` + ``pack`` to 128 tokens) on sentences of the sample data, in turn with the
encoder on the same ids: a random 1-layer, hidden-8 RoBERTa (the test size) and a
random base-sized one (12 layers, hidden 768, as roberta-base / xlm-roberta-base, with the
tokenizer's vocabulary). Also times Hugging Face's fast tokenizer on the same sentences, and
one word of 2,000 random letters (the BPE merge loop's worst case). Prints a table and ``BENCH_JSON``.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tfft.backend import tf  # noqa: E402


def p50_ms(function, inputs, calls: int) -> float:
    """Median milliseconds of ``calls`` calls of ``function``, cycling through ``inputs``."""
    times = []
    for index in range(calls):
        begin = time.perf_counter()
        function(inputs[index % len(inputs)])
        times.append(time.perf_counter() - begin)
    return float(np.median(times)) * 1000


def main() -> None:
    import transformers
    from tokenizers import Tokenizer

    import test_graph_tokenizers as kinds  # the offline tokenizer builders of the parity tests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--no-base", action="store_true", help="skip the base-sized encoder")
    args = parser.parse_args()

    lines = kinds._examples_text()
    sentences = [line for line in lines if len(line.split()) > 5][:256]
    specs = {"roberta (byte-level BPE)": kinds._train_byte_level(lines + kinds.HARD_TEXTS, False)}
    try:
        converted = kinds._convert_sentencepiece(lines + kinds.HARD_TEXTS, Path(tempfile.mkdtemp()))
        specs["xlm-r (Unigram, Precompiled)"] = converted["xlm-r"]
        specs["albert (Unigram, NFKD+lowercase)"] = converted["albert"]
    except BaseException:  # pytest.skip without sentencepiece
        specs["unigram (Metaspace)"] = kinds._train_unigram(lines + kinds.HARD_TEXTS)
    # one word of 2,000 random letters: few repeated pairs, so about one BPE merge round per merge
    long_word = "".join(random.Random(0).choice(string.ascii_lowercase) for _ in range(2000))
    results = {}
    print(f"{'kind':34s} {'graph tok 1':>11s} {'HF tok 1':>9s} {'tiny enc 1':>10s} {'base enc 1':>10s} "
          f"{'graph tok 64':>12s} {'base enc 64':>11s} {'2k-char word':>12s}   (ms)")
    for name, spec in specs.items():
        hf = Tokenizer.from_str(spec)
        graph = kinds.graph_tokenizer(ROOT, hf.to_str())
        encode = tf.function(lambda text: graph.pack(graph.tokenize(text)[0], 128),
                             input_signature=[tf.TensorSpec([None], tf.string)])
        singles = [tf.constant([s]) for s in sentences]
        batches = [tf.constant(sentences[i:i + 64]) for i in range(0, len(sentences) - 63, 64)]
        row = {"graph_tokenizer_ms": p50_ms(encode, singles, args.calls),
               "hf_tokenizer_ms": p50_ms(lambda s: hf.encode(s), sentences, args.calls)}
        features = encode(singles[0])
        for size in ("tiny",) + (() if args.no_base else ("base",)):
            config = transformers.RobertaConfig(
                vocab_size=hf.get_vocab_size(), type_vocab_size=1, pad_token_id=1, max_position_embeddings=130,
                **({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
                   if size == "tiny" else {}))
            model = transformers.TFRobertaForTokenClassification(config)
            run = tf.function(lambda f: model(input_ids=f["input_ids"], attention_mask=f["attention_mask"],
                                              training=False).logits)
            ids = [encode(s) for s in singles[:20]]
            row[f"{size}_encoder_ms"] = p50_ms(run, ids, args.calls)
            if size == "base":
                batch_ids = [encode(b) for b in batches]
                row["base_encoder_batch64_ms"] = p50_ms(run, batch_ids, args.batches)
        row["graph_tokenizer_batch64_ms"] = p50_ms(encode, batches, args.batches)
        row["long_word_ms"] = p50_ms(encode, [tf.constant([long_word])], 3)
        results[name] = row
        print(f"{name:34s} {row['graph_tokenizer_ms']:11.2f} {row['hf_tokenizer_ms']:9.3f} "
              f"{row['tiny_encoder_ms']:10.2f} {row.get('base_encoder_ms', float('nan')):10.2f} "
              f"{row['graph_tokenizer_batch64_ms']:12.1f} {row.get('base_encoder_batch64_ms', float('nan')):11.1f} "
              f"{row['long_word_ms']:12.1f}")
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
