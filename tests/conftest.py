"""Shared fixtures: a tiny random-init BERT checkpoint and hand-labelled sentences.

The tiny model (1 layer, hidden size 8) makes every unit test that trains or predicts
run in seconds; tests that need the real default model or ../shared/data are marked
``integration`` and skip with a reason when their data is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from tfft.backend import keras  # noqa: F401  (environment before transformers)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DATA = REPO / "examples" / "data"

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "is", "good", "bad", ".",
              "anna", "flew", "to", "tokyo", "paris", "##s", "##ing", "un", "##believ", "##able",
              "acme", "corp", "met", "in", "berlin", "on", "monday", "a", "b", "c", "de", "##f"]


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is absent (the ../shared/data checkout)")
    return path


def write_tiny_checkpoint(directory: Path, vocab=TINY_VOCAB, dropout: float = 0.1) -> Path:
    """A random-init 1-layer BERT (hidden size 8) with its tokenizer, saved like a hub checkpoint.

    ``dropout=0`` makes training deterministic across processes (distributed tests). The weights are drawn
    from a fixed seed: every session and xdist worker tests the same checkpoint (an unlucky draw once left a
    multi-label test's model with two label sets)."""
    from transformers import BertConfig, BertTokenizerFast, TFBertModel

    from tfft.backend import keras

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(str(directory))
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    keras.utils.set_random_seed(0)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tfft.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def built_once(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``built_once(name, build)``: the folder ``build(folder)`` fills, made once per test session.

    Under pytest-xdist (``make test``) the folder is shared by the workers, so that files running in
    different processes share a trained run too: the first worker to ask builds it under a lock, the
    others wait for it and reuse it. Tests may add files to the folder (``tfft evaluate`` writes a report
    into a run) but must not change or remove what is there."""
    from filelock import FileLock  # a dependency of transformers

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    root.mkdir(exist_ok=True)

    def folder(name: str, build: Callable[[Path], object]) -> Path:
        target, built = root / name, root / f"{name}.built"
        with FileLock(str(root / f"{name}.lock")):
            if not built.exists():
                shutil.rmtree(target, ignore_errors=True)  # a build that failed half-way
                build(target)
                built.touch()
        return target

    return folder


@pytest.fixture(scope="session")
def family_checkpoint(built_once):
    """``family_checkpoint(model_type)``: that family's tiny checkpoint (tests/families.py), built once per session."""
    from families import write_family_checkpoint

    def checkpoint(family: str) -> Path:
        return built_once(f"tiny-{family}", lambda directory: write_family_checkpoint(family, directory))

    return checkpoint


@pytest.fixture(scope="session")
def family_run(family_checkpoint, built_once):
    """``family_run(model_type, name)``: that family's run trained with ``tfft train`` and tests/families.py's
    ``RUNS[name]`` options, once per session: tests/test_families.py and tests/test_family_serving.py share it."""
    from families import RUNS
    from tfft.cli import main

    def run(family: str, name: str) -> Path:
        def train(directory: Path) -> None:
            argv = ["train", *RUNS[name], "--model", str(family_checkpoint(family)), "--output-dir", str(directory)]
            assert main(argv) == 0, (family, name)

        return built_once(f"run-{family}-{name}", train)

    return run
