"""SST-2 accuracy on whole sentences no training phrase was cut from: a stand-in for GLUE dev.

    python bench/sst2_sentences.py runs/sst2-sentences [tfft train options ...]

Why: the shared ``sst2/dev.tsv`` is a random tenth of GLUE's training phrases, whose sentences
and sub-phrases fill ``train.tsv`` too (145 of 200 sampled dev items of 12 words or more are part of
a longer training item), so its accuracy (0.946) says little of the GLUE dev figure (0.8945, full
sentences the model never saw a part of). This splits the shared files by sentence: a *root* is an
item of six words or more that no longer item contains (a whole review sentence); 1,000 roots (every
root of ``dev.tsv``, the rest drawn from ``train.tsv`` with a fixed seed) are held out together with
every item that is a word span of one of them. ``tfft train`` learns from the other items of
``train.tsv`` and validates on the other items of ``dev.tsv``; the held-out sentences are scored
only from what ``tfft predict`` prints for their text. Prints one JSON line (prefix ``BENCH_JSON``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
HELD_OUT = 1000
MIN_ROOT_WORDS = 6
Item = Tuple[str, str]  # (text, label)


def read_items(path: Path) -> List[Item]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(text.strip(), label.strip()) for text, label in (line.split("\t") for line in lines)]


def word_spans(text: str) -> Set[str]:
    """Every contiguous run of words of ``text``, itself included."""
    words = text.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def split_by_sentence(train: Sequence[Item], dev: Sequence[Item], held_out: int = HELD_OUT,
                      seed: int = 0) -> Dict[str, List[Item]]:
    """``train``/``validation``/``test`` items: ``test`` holds whole sentences none of whose spans is elsewhere."""
    inside_longer: Set[str] = set()
    for text, _ in (*train, *dev):
        if len(text.split()) >= MIN_ROOT_WORDS:
            inside_longer |= word_spans(text) - {text}
    def roots(items): return [item for item in items if len(item[0].split()) >= MIN_ROOT_WORDS
                              and item[0] not in inside_longer]
    test = roots(dev)
    test += random.Random(seed).sample(roots(train), max(0, held_out - len(test)))
    test = test[:held_out]
    covered: Set[str] = set().union(*(word_spans(text) for text, _ in test))
    return {"train": [item for item in train if item[0] not in covered],
            "validation": [item for item in dev if item[0] not in covered],
            "test": test}


def write_tsv(path: Path, items: Sequence[Item]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in items), encoding="utf-8")
    return path


def tfft(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tfft.cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tfft {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def main(argv: Sequence[str]) -> None:
    run_dir, options = Path(argv[0]), list(argv[1:])
    if not (SHARED / "train.tsv").is_file():
        sys.exit(f"needs the shared SST-2 files in {SHARED}")
    data_dir = run_dir.parent / f"{run_dir.name}-data"
    marker = data_dir / ".sst2_sentences"  # files in data_dir are replaced only when this benchmark wrote them
    if data_dir.is_dir() and any(data_dir.iterdir()) and not marker.is_file():
        sys.exit(f"{data_dir} holds files this benchmark did not write; choose another run directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    split = split_by_sentence(read_items(SHARED / "train.tsv"), read_items(SHARED / "dev.tsv"))
    files = {name: write_tsv(data_dir / f"{name}.tsv", items) for name, items in split.items()}
    (data_dir / "test.txt").write_text("".join(text + "\n" for text, _ in split["test"]), encoding="utf-8")
    started = time.time()
    tfft("train", "--task", "sequence-classification", "--train", str(files["train"]),
         "--validation", str(files["validation"]), "--text-column", "sentence", "--output-dir", str(run_dir),
         "--overwrite", *options)
    minutes = (time.time() - started) / 60
    printed = [json.loads(line) for line in tfft("predict", str(run_dir), "--input", str(data_dir / "test.txt")).splitlines()
               if line.startswith("{")]
    correct = sum(str(row["label"]) == label for row, (_, label) in zip(printed, split["test"]))
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    print("BENCH_JSON " + json.dumps({
        "options": options, "train_items": len(split["train"]), "validation_items": len(split["validation"]),
        "test_sentences": len(split["test"]), "test_accuracy": round(correct / len(split["test"]), 4),
        "validation": metrics.get("validation", metrics), "train_minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
