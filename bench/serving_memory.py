"""Peak memory and time of one request to an exported NER SavedModel, by request size.

    nice .venv/bin/python bench/serving_memory.py                       # 1k, 10k, 100k, refused 1M characters
    nice .venv/bin/python bench/serving_memory.py --sizes 1000,20000 --repeats 1

Why: a model server runs every request it accepts to the end, so a request must cost time and
memory linear in its size, and one over the limits (:mod:`tfft.export.request_limits`) must be
refused before any work. The model is the untrained default model (all-MiniLM-L6-v2) with a
token-classification head and word shapes, as ``tfft train`` makes for NER, saved by tfft's
``ServingModule`` (cost does not depend on the weights); ``--saved-model`` measures an existing export
instead. The text is the sample data's validation sentences, repeated to the size.

Each size runs in its own process, which loads the SavedModel and answers a short sentence first
(tracing and the model's own memory are not the request's), resets its peak resident memory
(``/proc/self/clear_refs``), then sends the request: the peak memory is that process's VmHWM
after the request less its resident memory before it, and the time the median of ``--repeats``
calls. Prints a table and one JSON line (prefix ``BENCH_JSON``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import memory_kib  # noqa: E402  (bench/memory.py)

SENTENCES = Path(__file__).resolve().parents[1] / "examples" / "data" / "ner_valid.txt"
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def request_text(chars: int) -> str:
    """The validation sentences joined by spaces and repeated, cut to ``chars`` characters at a word's end."""
    sentences = []
    for block in SENTENCES.read_text(encoding="utf-8").split("\n\n"):
        words = [line.split()[0] for line in block.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
        if words:
            sentences.append(" ".join(words))
    corpus = " ".join(sentences)
    text = (corpus + " ") * (chars // (len(corpus) + 1) + 1)
    return text[:chars].rsplit(" ", 1)[0].ljust(chars, ".")


def export_default_model(directory: Path) -> Path:
    """The untrained default model as an NER SavedModel (what ``tfft export`` writes for a default-model run)."""
    from tfft.backend import keras, tf
    from tfft.data import TOKEN_CLASSIFICATION, LabelMap
    from tfft.export.saved_model import ServingModule
    from tfft.export.tokenizer import InGraphBertTokenizer
    from tfft.features import inference_length
    from tfft.models import build_model, default_model_dir, load_tokenizer

    keras.mixed_precision.set_global_policy("float32")
    model = build_model(TOKEN_CLASSIFICATION, LabelMap(LABELS), "default", word_shapes=True)
    model_dir = default_model_dir()
    module = ServingModule(model, InGraphBertTokenizer.from_pretrained_dir(model_dir), TOKEN_CLASSIFICATION, LABELS,
                           inference_length(load_tokenizer(str(model_dir))),
                           assets={"vocab": str(model_dir / "vocab.txt")}, word_shapes=True)
    path = directory / "ner"
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    return path


def measure(path: str, chars: int, repeats: int) -> Dict[str, object]:
    """In this process: one request of ``chars`` characters after a warm-up, its peak memory and median time."""
    from tfft.backend import tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    serve(text=tf.constant(["Anna flew to Tokyo ."]))
    request = tf.constant([request_text(chars)])
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the resident memory now
    before = memory_kib("VmHWM")
    seconds, refusal, words = [], None, None
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            words = int(serve(text=request)["num_words"][0])
        except tf.errors.InvalidArgumentError as error:
            refusal = error.message.split("assertion failed: [", 1)[-1].split("]", 1)[0]
        seconds.append(time.perf_counter() - start)
    return {"chars": chars, "refused": refusal, "words": words, "seconds": sorted(seconds)[len(seconds) // 2],
            "peak_mib": (memory_kib("VmHWM") - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="request sizes in characters")
    parser.add_argument("--repeats", type=int, default=3, help="calls per size (the median time is reported)")
    parser.add_argument("--saved-model", help="an existing NER export (EXPORT_DIR/NAME/VERSION) to measure instead")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "CHARS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.saved_model) if args.saved_model else export_default_model(Path(scratch))
        rows: List[Dict[str, object]] = []
        for chars in (int(size) for size in args.sizes.split(",")):
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(path), str(chars), "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"{'characters':>10} {'words':>7} {'answer':>8} {'time ms':>9} {'peak MiB':>9} "
          f"{'ms/1k ch':>9} {'MiB/1k ch':>9}")
    for row in rows:
        per_k = 1000 / row["chars"]
        print(f"{row['chars']:>10,} {row['words'] if row['words'] is not None else '-':>7} "
              f"{'refused' if row['refused'] else 'tagged':>8} {row['seconds'] * 1000:>9.1f} {row['peak_mib']:>9.1f} "
              f"{row['seconds'] * 1000 * per_k:>9.2f} {row['peak_mib'] * per_k:>9.2f}")
    for row in rows:
        if row["refused"]:
            print(f"refused {row['chars']:,}: {row['refused']}")
    model = args.saved_model or "default model (all-MiniLM-L6-v2), untrained NER head, word shapes"
    print("BENCH_JSON " + json.dumps({"bench": "serving_memory", "model": model, "requests": rows}))


if __name__ == "__main__":
    main()
