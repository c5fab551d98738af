"""What the non-chief workers of a cluster do and do not do, checked in one process (the multi-process
runs in test_distributed.py check that a cluster trains the same run as one process)."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from tfft.config import TrainConfig
from tfft.distribution import is_chief, worker_index

from conftest import SAMPLE_DATA


def fake_strategy(task_type, task_id, spec):
    resolver = SimpleNamespace(task_type=task_type, task_id=task_id,
                               cluster_spec=lambda: SimpleNamespace(as_dict=lambda: spec))
    return SimpleNamespace(cluster_resolver=resolver)


def test_worker_index_numbers_the_chief_first_then_the_workers():
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert [worker_index(fake_strategy(t, i, with_chief)) for t, i in (("chief", 0), ("worker", 0), ("worker", 1))] \
        == [0, 1, 2]
    workers_only = {"worker": ["a:1", "b:1", "c:1"]}
    assert [worker_index(fake_strategy("worker", i, workers_only)) for i in range(3)] == [0, 1, 2]
    assert is_chief(fake_strategy("worker", 0, workers_only)) and not is_chief(fake_strategy("worker", 0, with_chief))
    assert worker_index(SimpleNamespace()) == 0  # one process, no cluster


@pytest.fixture
def as_second_worker(monkeypatch):
    """This process plays worker 1 of 2: not the chief, dropout seeded one further."""
    import tfft.training.callbacks as callbacks
    import tfft.training.trainer as trainer

    monkeypatch.setattr(trainer, "is_chief", lambda strategy: False)
    monkeypatch.setattr(trainer, "worker_index", lambda strategy: 1)
    monkeypatch.setattr(callbacks, "is_chief", lambda strategy: False)


def test_another_worker_trains_without_scoring_checkpoints_or_logs_and_writes_nothing(
        as_second_worker, tiny_model_dir, tmp_path, monkeypatch):
    from tfft.training.callbacks import ValidationMetrics
    from tfft.training.trainer import fit_model, prepare_data

    def never(self):
        raise AssertionError("a worker scored the validation set, whose result only the chief's counts")

    monkeypatch.setattr(ValidationMetrics, "score", never)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
                         validation=str(SAMPLE_DATA / "sentiment_valid.tsv"), model=str(tiny_model_dir), epochs=2,
                         batch_size=16, max_train_examples=64, max_validation_examples=16,
                         output_dir=str(tmp_path / "run"))
    data = prepare_data(config)
    seeds = []
    import tfft.training.trainer as trainer

    real_seed = trainer.keras.utils.set_random_seed
    monkeypatch.setattr(trainer.keras.utils, "set_random_seed", lambda seed: (seeds.append(seed), real_seed(seed)))
    before = {name for name in os.listdir("/tmp") if name.startswith("tfft-worker-")}
    model, best_epoch, history = fit_model(config, data, None, backup_dir=tmp_path / "chief-backup")
    assert seeds == [config.seed, config.seed + 1]  # the same initial weights, its own dropout masks
    # The (single-process stand-in for the) chief's scores reached the logs; the worker kept them in its history.
    assert set(history) >= {"loss", "val_accuracy", "val_macro_f1", "val_loss"} and len(history["loss"]) == 2
    assert best_epoch == int(np.argmax(history["val_accuracy"]))
    assert os.listdir(tmp_path) in ([], ["chief-backup"])  # no history.csv, logs/ or best weights
    assert {name for name in os.listdir("/tmp") if name.startswith("tfft-worker-")} == before  # no scratch


def test_fit_model_refuses_a_chief_without_a_work_directory(tiny_model_dir, tmp_path):
    from tfft.training.trainer import fit_model

    with pytest.raises(ValueError, match="the chief of a run needs a work directory"):
        fit_model(TrainConfig(task="sequence-classification", train="x"), None, None)
