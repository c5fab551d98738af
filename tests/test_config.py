"""Options: YAML and flags agree, flags win, and bad values are refused with clear messages."""

import pytest

from tfft.cli import build_parser, config_from_args
from tfft.config import TrainConfig
from tfft.errors import ConfigError


def parse(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: token-classification\ntrain: a.txt\nepochs: 5\nlearning-rate: 0.0003\nxla: true\n")
    config = parse("--config", str(path), "--epochs", "2", "--no-xla")
    assert (config.task, config.train, config.epochs, config.learning_rate, config.xla) == (
        "token-classification", "a.txt", 2, 3e-4, False)
    assert config.batch_size == TrainConfig().batch_size


def test_saved_config_round_trips(tmp_path):
    config = TrainConfig(task="sequence-classification", train="t.tsv", text_column="review", batch_tokens=2048)
    config.save(tmp_path / "config.yaml")
    assert TrainConfig.load(tmp_path / "config.yaml") == config


def test_unknown_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: token-classification\nlearnig_rate: 1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown option\(s\) learnig_rate"):
        parse("--config", str(path))


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "'epochs' option must be a positive integer"),
    ("task", "ner", "'task' option must be one of"),
    ("learning_rate", -1.0, "'learning_rate' option must be > 0"),
])
def test_invalid_values_are_refused(field, value, message):
    config = TrainConfig(task="token-classification", train="a.txt")
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_monitor_defaults_to_the_task_metric():
    assert TrainConfig(task="token-classification").monitor_metric == "val_f1"
    assert TrainConfig(task="sequence-classification").monitor_metric == "val_accuracy"


def test_learning_rate_defaults_per_task_and_explicit_values_win():
    assert TrainConfig(task="token-classification").learning_rate == 2e-4
    assert TrainConfig(task="sequence-classification").learning_rate == 1e-4
    assert parse("--task", "token-classification", "--learning-rate", "5e-5").learning_rate == 5e-5
