"""Options: YAML and flags agree, flags win, and bad values are refused with clear messages."""

from dataclasses import replace

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
    ("epochs", 0, "'epochs' option must be an integer from 1 to 2147483647. Got 0 instead"),
    ("task", "ner", "'task' option must be one of"),
    ("learning_rate", -1.0, "'learning_rate' option must be a finite number > 0. Got -1.0"),
    ("learning_rate", float("inf"), "'learning_rate' option must be a finite number > 0. Got inf"),
    ("weight_decay", float("nan"), "'weight_decay' option must be a finite number >= 0. Got nan"),
    ("seed", -1, "'seed' option must be an integer from 0 to 2147483647"),
    ("batch_size", 2 ** 40, "'batch_size' option must be an integer from 1 to 2147483647"),
    ("batch_size", 8.0, "'batch_size' option must be an integer"),  # Python values are not converted
    ("batch_size", True, "'batch_size' option must be an integer"),
    ("learning_rate", "1e-4", "'learning_rate' option must be a finite number > 0. Got '1e-4'"),
    ("warmup_fraction", 2.0, r"'warmup_fraction' option must be a number in \[0, 1\)"),
    ("dropout", 1.0, r"'dropout' option must be a number in \[0, 1\)"),
    ("attention_dropout", -0.1, r"'attention_dropout' option must be a number in \[0, 1\)"),
    ("stride", 256, "'stride' option must be below max_length"),
    ("monitor", "val_macro_f1", "'monitor' option must be one of the metrics token-classification produces: val_f1"),
    ("max_train_examples", 0, "'max_train_examples' option must be an integer from 1"),
    ("context_window", -1, "'context_window' option must be an integer from 0"),
    ("output_dir", "", "'output_dir' option must not be empty"),
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


def test_yaml_values_are_converted_to_the_declared_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('task: token-classification\ntrain: a.txt\nlearning_rate: 1e-4\nbatch_size: "32"\n'
                    "xla: yes\nepochs: 3.0\nlabel_column: 2\nword_shapes: off\n")
    config = parse("--config", str(path))
    assert (config.learning_rate, config.batch_size, config.xla, config.epochs, config.label_column,
            config.word_shapes) == (1e-4, 32, True, 3, "2", False)


@pytest.mark.parametrize("line,message", [
    ("batch_size: lots", "run.yaml: the 'batch_size' option must be an integer from 1 to 2147483647. Got 'lots'"),
    ("epochs: 2.5", "run.yaml: the 'epochs' option must be an integer from 1 to 2147483647. Got 2.5"),
    ("xla: maybe", "run.yaml: the 'xla' option must be true or false. Got 'maybe'"),
    ("learning_rate: [1, 2]", r"run.yaml: the 'learning_rate' option must be a finite number > 0. Got \[1, 2\]"),
    ("learning_rate: .inf", "run.yaml: the 'learning_rate' option must be a finite number > 0. Got inf"),
    ("weight_decay: .nan", "run.yaml: the 'weight_decay' option must be a finite number >= 0. Got nan"),
    ("seed: -1", "run.yaml: the 'seed' option must be an integer from 0 to 2147483647. Got -1"),
    ("dropout: '1'", r"run.yaml: the 'dropout' option must be a number in \[0, 1\). Got '1'"),
    ("text_column: ''", "run.yaml: the 'text_column' option must not be empty"),
])
def test_yaml_values_of_the_wrong_type_name_the_file_and_key(tmp_path, line, message):
    path = tmp_path / "run.yaml"
    path.write_text(f"task: token-classification\ntrain: a.txt\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        parse("--config", str(path))


def test_small_training_sets_get_smaller_batches_and_more_epochs():
    config = TrainConfig(task="token-classification", train="a.txt")
    chosen, sentences = config.schedule_for(300)
    assert chosen == {"batch_size": 8, "epochs": 14} and len(sentences) == 2  # 38 steps an epoch
    assert (config.batch_size, config.epochs) == (None, None)  # left as it is
    assert config.schedule_for(1000)[0] == {"batch_size": 16, "epochs": 8}
    assert config.schedule_for(14041)[0] == {"batch_size": 32, "epochs": 4}  # CoNLL-2003: F1 0.9414 against 0.9370
    sentences = replace(config, task="sequence-classification")
    assert sentences.schedule_for(60614)[0] == {"batch_size": 32, "epochs": 3}
    given = TrainConfig(task="token-classification", train="a.txt", batch_size=4, epochs=2)
    assert given.schedule_for(50) == ({}, [])
    assert config.schedule_for(20)[0] == {"batch_size": 8, "epochs": 20}  # capped


@pytest.mark.parametrize("replicas, sizes", [(3, (9, 18, 33)), (5, (10, 20, 35)), (6, (12, 18, 36)),
                                             (7, (14, 21, 35))])
def test_default_batch_sizes_split_evenly_among_any_number_of_replicas(replicas, sizes):
    for examples, size in zip((300, 1000, 14041), sizes):
        config = TrainConfig(task="token-classification", train="a.txt")
        config = replace(config, **config.schedule_for(examples, replicas)[0])
        assert config.batch_size == size
        config.check_replica_split(replicas)


def test_the_replica_check_names_the_option_that_sizes_the_batches():
    config = TrainConfig(task="token-classification", train="a.txt", batch_size=8)
    with pytest.raises(ConfigError, match=r"The 'batch_size' option .* 3 replicas; 8 does not divide by 3 \(6 or 9 "):
        config.check_replica_split(3)
    TrainConfig(task="token-classification", train="a.txt", batch_size=8, batch_tokens=300).check_replica_split(3)
    with pytest.raises(ConfigError, match=r"The 'batch_tokens' option is the global batch \(tokens per step\)"):
        TrainConfig(task="token-classification", train="a.txt", batch_size=9, batch_tokens=1000).check_replica_split(3)


@pytest.mark.parametrize("command", ["train", "tune", "evaluate"])
def test_help_marks_the_tpu_strategy_experimental(command, capsys):
    # Nothing in tfft's tests runs on a TPU: --help must not advertise it as supported.
    from tfft.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tpu (experimental: untested on TPUs" in text
    assert "--tpu TPU --strategy tpu (experimental):" in text


def test_every_numeric_option_declares_its_range():
    # The one declaration that flags, YAML, TrainConfig(...) and search spaces are checked against.
    import dataclasses

    from tfft.config import option_range

    for f in dataclasses.fields(TrainConfig):
        numeric = "int" in str(f.type) or "float" in str(f.type)
        assert (option_range(f) is not None) == numeric, f.name


@pytest.mark.parametrize("text,message", [
    ("task: token-classification\nepochs: 2\nepochs: 3\n",
     r"run\.yaml:3: the key 'epochs' is given twice \(first on line 2\)"),
    ("task: token-classification\nclass_weight:\n  pos: 1\n  pos: 2\n", r"run\.yaml:4: the key 'pos' is given twice"),
    ("task: token-classification\nlearning-rate: 1e-4\nlearning_rate: 2e-4\n",
     r"run\.yaml: 'learning-rate' and 'learning_rate' name the same option"),
])
def test_a_yaml_option_given_twice_is_refused(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse("--config", str(path))


def test_a_yaml_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("task: token-classification\ntext_column: r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"run\.yaml:2: cannot decode byte 0xe9 \(byte 15 of the line\) as utf-8; "
                                          "YAML configuration files are read as UTF-8"):
        parse("--config", str(path))
    path.write_bytes("\ufefftask: token-classification\ntext_column: résumé\n".encode("utf-8"))  # a BOM is fine
    assert parse("--config", str(path)).text_column == "résumé"


@pytest.mark.parametrize("text,message", [
    ("task: [token-classification\nepochs: 1\n", "run.yaml:2:7: invalid YAML: expected ',' or ']', but got ':' "
                                                 "(while parsing a flow sequence)"),
    ("task: token-classification\n\tepochs: 1\n", "run.yaml:2:1: invalid YAML: found character '\\t' that cannot "
                                                   "start any token (while scanning for the next token)"),
    ("epochs: *x\n", "run.yaml:1:9: invalid YAML: found undefined alias 'x'"),
])
def test_invalid_yaml_is_one_line_naming_file_line_and_column(tmp_path, text, message, capsys):
    from tfft.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"tfft train: error: {tmp_path / message}"]


def test_a_config_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path} is a directory, not a YAML configuration file$"):
        parse("--config", str(tmp_path))


@pytest.mark.parametrize("option", ["max_examples", "batch_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_evaluate_run_checks_its_counts_before_reading_anything(option, value):
    from tfft.evaluation import evaluate_run

    # 0 and -1 once meant "all" and "all but the last": the ranges of `tfft evaluate`'s flags apply in Python too.
    with pytest.raises(ConfigError, match=f"^The '{option}' option must be an integer from 1 to 2147483647"):
        evaluate_run("no-such-run", "no-such.txt", **{option: value})
