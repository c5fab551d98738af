"""Checkpoints laid out as the hub publishes them (tests/published_tokenizers.py) load with what every path needs."""

from __future__ import annotations

import pytest

from published_tokenizers import albert_base_v2, roberta_base


def test_a_tokenizer_saved_without_model_max_length_takes_the_models_position_window(tmp_path):
    """roberta-base and albert-base-v2 ship no model_max_length: prediction windows must still fit the
    position embeddings (tiny ALBERT: 64; RoBERTa: 514 less the padding offset of 2)."""
    pytest.importorskip("sentencepiece")
    from tfft.features import inference_length
    from tfft.models import load_tokenizer

    albert = load_tokenizer(str(albert_base_v2(tmp_path / "albert")))
    roberta = load_tokenizer(str(roberta_base(tmp_path / "roberta")))
    assert (inference_length(albert), inference_length(roberta)) == (64, 512)
