"""The real default model (all-MiniLM-L6-v2) on small real slices of ../shared/data.

Few and slow-ish (tens of seconds each): they prove the pretrained weights load into the
TF classes and that fine-tuning learns, with figures far above chance.
"""

import json

import pytest

from tfft.config import TrainConfig
from tfft.prediction import Predictor
from tfft.training import train

from conftest import shared_file

pytestmark = pytest.mark.integration


def test_ner_on_a_conll_slice_learns_entities(tmp_path):
    config = TrainConfig(
        task="token-classification", train=str(shared_file("conll2003/train.txt")),
        validation=str(shared_file("conll2003/valid.txt")), output_dir=str(tmp_path / "ner"),
        epochs=1, batch_size=16, max_train_examples=1000, max_validation_examples=200, tensorboard=False,
    )
    result = train(config)
    # 63 steps from a sentence-embedding checkpoint: measured F1 ~0.4-0.5; chance is ~0.
    assert result.best_scores["val_f1"] > 0.3, result.best_scores
    predictor = Predictor.from_run_dir(result.run_dir)
    [prediction] = predictor.predict(["The European Commission met in Brussels on Monday ."])
    assert any(entity["text"] == "Brussels" for entity in prediction["entities"]), prediction


def test_sentiment_on_an_sst2_slice_beats_chance_by_far(tmp_path):
    config = TrainConfig(
        task="sequence-classification", train=str(shared_file("sst2/train.tsv")),
        validation=str(shared_file("sst2/dev.tsv")), output_dir=str(tmp_path / "sst2"),
        epochs=1, batch_size=32, learning_rate=1e-4, max_train_examples=1500, max_validation_examples=400,
        tensorboard=False,
    )
    result = train(config)
    assert result.best_scores["val_accuracy"] > 0.75, result.best_scores
    report = json.loads((result.run_dir / "reports" / "validation.json").read_text())
    assert report["scores"]["accuracy"] == pytest.approx(result.best_scores["val_accuracy"])
