"""Every Python file in examples/ runs here, so an API change that breaks an example fails the suite.

Each example runs as a user runs it (``python examples/NAME.py ...``, a fresh process), on the
tiny random-init model of conftest.py and one epoch, and the test checks what it prints, not
only its exit code. A new example needs an entry in ``EXAMPLES``: the test for it fails until
it has one.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from conftest import REPO, SAMPLE_DATA

EXAMPLES_DIR = REPO / "examples"
TIMEOUT = 300  # seconds; each example takes seconds on the tiny model, minutes would mean a hang


def json_lines(output: str) -> List[dict]:
    """The lines of ``output`` that are JSON objects, in order."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def check_ner_keras(output: str, tmp_path: Path) -> None:
    assert "micro avg" in output, "the seqeval validation report is missing"
    for entity_type in ("LOC", "MISC", "ORG", "PER"):  # the sample data's types, one report row each
        assert f" {entity_type} " in output, f"no {entity_type} row in the validation report"
    (result,) = json_lines(output)
    assert result["text"] == "Anna Schmidt flew to Tokyo on Monday."
    # The natural word rule: the final period is a word of its own, as in the CoNLL training data.
    assert [word["text"] for word in result["words"]] == ["Anna", "Schmidt", "flew", "to", "Tokyo", "on", "Monday", "."]
    for entity in result["entities"]:
        assert result["text"][entity["start"]:entity["end"]] == entity["text"]
        assert entity["type"] in ("LOC", "MISC", "ORG", "PER")


def check_sentiment_keras(output: str, tmp_path: Path) -> None:
    metrics, *results = json_lines(output)
    assert {"loss", "accuracy"} <= set(metrics), metrics
    assert 0 <= metrics["accuracy"] <= 1
    assert [result["text"] for result in results] == ["the acting was brilliant.", "a dull, lifeless script."]
    for result in results:
        assert set(result["probabilities"]) == {"0", "1"}
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
        assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def check_make_sample_data(output: str, tmp_path: Path) -> None:
    written = tmp_path / "out"
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in SAMPLE_DATA.iterdir())
    for path in SAMPLE_DATA.iterdir():
        assert filecmp.cmp(path, written / path.name, shallow=False), \
            f"examples/data/{path.name} is not what examples/make_sample_data.py writes; run it and commit the result"


# Example file -> (its arguments; {model} is the tiny checkpoint, {tmp} a scratch directory), the check of its output.
EXAMPLES: Dict[str, Tuple[List[str], Callable[[str, Path], None]]] = {
    "ner_keras.py": (["--model", "{model}", "--epochs", "1"], check_ner_keras),
    "sentiment_keras.py": (["--model", "{model}", "--epochs", "1"], check_sentiment_keras),
    "make_sample_data.py": (["--out-dir", "{tmp}/out"], check_make_sample_data),
}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES_DIR.glob("*.py")))
def test_example_runs_and_prints_what_it_promises(name, tiny_model_dir, tmp_path):
    assert name in EXAMPLES, f"examples/{name} is not run by the test suite: add it to EXAMPLES in {__file__}"
    arguments, check = EXAMPLES[name]
    arguments = [a.format(model=tiny_model_dir, tmp=tmp_path) for a in arguments]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run([sys.executable, str(EXAMPLES_DIR / name), *arguments], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert process.returncode == 0, f"examples/{name} failed:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    check(process.stdout, tmp_path)
