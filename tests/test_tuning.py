"""Hyperparameter search: every tuner completes trials on the tiny BERT, the reported best is
the best recorded trial, a rerun resumes without redoing trials, failures are counted and
reported, and the CLI writes results and a usable best run directory."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLE_DATA
from tfft.config import TrainConfig
from tfft.errors import ConfigError

NER = dict(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
           validation=str(SAMPLE_DATA / "ner_valid.txt"))
SENTIMENT = dict(task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
                 validation=str(SAMPLE_DATA / "sentiment_valid.tsv"))


def small_config(tiny_model_dir, tmp_path, data=NER, **options):
    """A few seconds per trial: 32 sentences, batches of 16, at most 2 epochs."""
    values = dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "tune"), epochs=2, batch_size=16,
                  max_train_examples=32, max_validation_examples=16, tensorboard=False)
    return TrainConfig(**{**data, **values, **options})


def small_space(config, **entries):
    from tfft.tuning import SearchSpace

    return SearchSpace.default(config).updated({"batch_size": 16, **entries})


def cli_args(tiny_model_dir, tmp_path, *extra):
    return ["tune", "--task", NER["task"], "--train", NER["train"], "--validation", NER["validation"],
            "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "tune"), "--epochs", "2",
            "--max-train-examples", "32", "--max-validation-examples", "16", "--no-tensorboard",
            "--batch-sizes", "16", *extra]


# ---- the search space, without training ----------------------------------------------

def test_search_space_from_yaml_values_and_flags(tmp_path):
    import argparse

    from tfft.tuning import Dimension, SearchSpace, search_space_from_args
    from tfft.tuning.options import add_tune_arguments

    config = TrainConfig(task="token-classification", epochs=4)
    space = SearchSpace.default(config).updated(
        {"learning_rate": {"min": 2e-5, "max": 5e-5}, "batch_size": [8, 16], "dropout": 0.1, "weight_decay": None})
    assert space.learning_rate == Dimension(2e-5, 5e-5, sampling="log")  # a learning-rate range is log by default
    assert space.batch_size == Dimension(choices=(8, 16))
    assert space.dropout == Dimension(choices=(0.1,))
    assert space.weight_decay is None and space.epochs == Dimension(1, 4)

    (tmp_path / "space.yaml").write_text("warmup_fraction: {min: 0.0, max: 0.3}\nepochs: [2, 3]\n")
    parser = argparse.ArgumentParser()
    add_tune_arguments(parser)
    args = parser.parse_args(["--search-space", str(tmp_path / "space.yaml"), "--learning-rate-range", "1e-5,1e-4",
                              "--batch-sizes", "16,32", "--epochs-range", "3"])
    space = search_space_from_args(args, config)
    assert space.warmup_fraction == Dimension(0.0, 0.3)
    assert space.learning_rate == Dimension(1e-5, 1e-4, sampling="log")
    assert space.batch_size == Dimension(choices=(16, 32))
    assert space.epochs == Dimension(choices=(3,))  # the flag wins over the file; one value fixes

    for bad, message in [({"batch_size": [16.5]}, "'batch_size' option must be an integer from 1 to 2147483647"),
                         ({"lr": 1e-5}, "unknown search-space"),
                         ({"dropout": {"min": 0.3, "max": 0.1}}, "min <= max"),
                         ({"weight_decay": {"min": 0, "max": 0.1, "sampling": "log"}}, "needs min > 0"),
                         # the options' own ranges (tfft.config.Range), as for a run's options
                         ({"learning_rate": {"min": 0, "max": 1e-4}}, "'learning_rate' option must be a finite "
                                                                     "number > 0. Got 0"),
                         ({"learning_rate": [1e-4, float("inf")]}, "'learning_rate' option .* Got inf"),
                         ({"dropout": {"min": 0.1, "max": 1.0}}, r"'dropout' option must be a number in \[0, 1\)"),
                         ({"epochs": {"min": 1, "max": 3, "step": 0}}, "'epochs' range's 'step' option must be an "
                                                                       "integer from 1"),
                         ({"epochs": {"low": 1, "max": 2}}, "needs 'min' and 'max'")]:
        with pytest.raises(ConfigError, match=message):
            SearchSpace.default(config).updated(bad)


def test_registered_hyperparameters_win_over_the_space():
    import keras_tuner as kt

    from tfft.tuning import SearchSpace

    config = TrainConfig(task="token-classification", train="x", learning_rate=5e-5, batch_size=32)
    hp = kt.HyperParameters()
    hp.Fixed("learning_rate", 3e-5)
    trial_config = SearchSpace.default(config).apply(hp, config)
    assert trial_config.learning_rate == 3e-5
    # Entries KerasTuner does not tune take the run's own value (the default of the entry).
    assert trial_config.batch_size == 32 and trial_config.weight_decay == config.weight_decay
    assert {p.name for p in hp.space} == {"learning_rate", "batch_size", "epochs", "warmup_fraction",
                                          "weight_decay", "dropout"}


def test_schedule_segment_continues_weights_and_learning_rate_schedule(tmp_path):
    """A Hyperband round starts from its parent's weights at the parent's optimizer step."""
    from tfft.backend import keras
    from tfft.tuning import ScheduleSegment

    def model():
        m = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
        m.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        return m

    parent = model()
    parent.save_weights(str(tmp_path / "parent.h5"))
    child = model()
    x, y = np.ones((8, 2)), np.ones((8, 1))
    history = child.fit(x, y, batch_size=4, epochs=10, verbose=0,
                        callbacks=[ScheduleSegment(3, 5, initial_weights=tmp_path / "parent.h5")])
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 of the schedule
    assert int(child.optimizer.iterations) == 5 * 2
    for a, b in zip(parent.get_weights(), child.get_weights()):
        np.testing.assert_array_equal(a, b)  # learning rate 0: exactly the parent's weights


# ---- searches on the tiny BERT -----------------------------------------------------------

def test_random_search_reports_best_loads_best_models_and_resumes(tiny_model_dir, tmp_path, capsys):
    from tfft.backend import keras
    from tfft.training.callbacks import ValidationMetrics
    from tfft.tuning import create_tuner

    config = small_config(tiny_model_dir, tmp_path)
    tuner = create_tuner(config, tuner="random", max_trials=3, space=small_space(config))
    report = tuner.search(verbose=0)
    assert len(report.completed) == 3 and not report.failed
    assert "3 trials, 3 completed, 0 failed" in capsys.readouterr().out
    scores = {t.trial_id: t.score for t in tuner.oracle.trials.values()}
    assert report.best.objective == max(scores.values())
    assert report.best.trial_id == tuner.oracle.get_best_trials(1)[0].trial_id
    assert tuner.get_best_hyperparameters()[0].values == report.best.hyperparameters
    assert [t.objective for t in report.trials] == sorted(scores.values(), reverse=True)

    model = tuner.get_best_models(1)[0]
    assert isinstance(model, keras.Model)
    data = tuner.hypermodel.data
    scorer = ValidationMetrics.from_examples(data.tokenizer, data.validation_examples, data.label_map,
                                             word_inputs=tuner.hypermodel.config.word_inputs)  # as resolved
    scorer.set_model(model)
    assert scorer.score()["f1"] == pytest.approx(report.best.objective)  # the best epoch's weights

    info_files = sorted((tmp_path / "tune" / "search").glob("trial_*/tfft_trial.json"))
    before = [p.read_text() for p in info_files]
    resumed = create_tuner(config, tuner="random", max_trials=3, space=small_space(config))
    again = resumed.search(verbose=0)
    assert len(resumed.oracle.trials) == 3 and len(again.completed) == 3
    assert [p.read_text() for p in info_files] == before  # no trial ran again
    assert again.best.trial_id == report.best.trial_id


def test_bayesian_search_maximises_the_classification_metric(tiny_model_dir, tmp_path):
    from tfft.tuning import create_tuner

    config = small_config(tiny_model_dir, tmp_path, data=SENTIMENT, monitor="val_macro_f1", epochs=1)
    tuner = create_tuner(config, tuner="bayesian", max_trials=2, space=small_space(config))
    report = tuner.search(verbose=0)
    assert (report.objective, report.direction) == ("val_macro_f1", "max")
    assert len(report.completed) == 2
    assert report.best.objective == max(t.metrics["val_macro_f1"] for t in report.completed)


def test_hyperband_continues_the_best_parent_trial(tiny_model_dir, tmp_path):
    from tfft.tuning import create_tuner

    config = small_config(tiny_model_dir, tmp_path)
    tuner = create_tuner(config, tuner="hyperband", max_trials=3, hyperband_factor=2, space=small_space(config))
    report = tuner.search(verbose=0)
    assert len(report.completed) == 3
    first_round = [t for t in report.trials if "tuner/trial_id" not in t.hyperparameters]
    assert all(t.hyperparameters["tuner/epochs"] == 1 and t.epochs_run == 1 for t in first_round)
    (continued,) = [t for t in report.trials if "tuner/trial_id" in t.hyperparameters]
    parent = max(first_round, key=lambda t: t.objective)
    assert continued.hyperparameters["tuner/trial_id"] == parent.trial_id
    assert (continued.hyperparameters["tuner/initial_epoch"], continued.hyperparameters["tuner/epochs"]) == (1, 2)
    assert continued.epochs_run == 1
    assert "epochs" not in continued.hyperparameters  # Hyperband owns the epochs


def test_failed_trial_is_counted_and_reported(tiny_model_dir, tmp_path, capsys):
    import keras_tuner as kt

    from tfft.tuning import create_tuner

    config = small_config(tiny_model_dir, tmp_path, epochs=1)
    hp = kt.HyperParameters()
    hp.Choice("warmup_fraction", [0.0, 1.0])  # 1.0 makes building the optimizer raise
    tuner = create_tuner(config, tuner="random", max_trials=2, hyperparameters=hp, tune_new_entries=False)
    report = tuner.search(verbose=0)
    assert [p.name for p in tuner.oracle.get_space().space] == ["warmup_fraction"]
    assert len(report.completed) == 1 and len(report.failed) == 1
    assert report.best.hyperparameters["warmup_fraction"] == 0.0
    assert report.completed[0].hyperparameters["learning_rate"] == config.learning_rate  # not searched
    (failed,) = report.failed
    assert failed.error == "tfft.errors.ConfigError: The 'warmup_fraction' option must be a number in [0, 1). Got 1.0 instead."
    output = capsys.readouterr().out
    assert "2 trials, 1 completed, 1 failed" in output and f"trial {failed.trial_id} failed: tfft.errors.ConfigError" in output
    results = json.loads(json.dumps(report.to_dict()))
    assert (results["completed"], results["failed"]) == (1, 1)


def test_cli_refuses_a_search_space_no_trial_can_run_before_training(tiny_model_dir, tmp_path, capsys):
    from tfft.cli import main

    with pytest.raises(SystemExit) as stopped:  # a usage error: nothing is read
        main(cli_args(tiny_model_dir, tmp_path, "--max-trials", "2", "--warmup-range", "1.0"))
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert ("argument --warmup-range: each value must be a number in [0, 1) (warmup_fraction); got '1.0'" in error
            and "Traceback" not in error)
    assert not (tmp_path / "tune" / "best").exists()


def test_cli_tune_writes_results_and_a_best_run_directory(tiny_model_dir, tmp_path, capsys):
    from tfft.cli import main

    (tmp_path / "space.yaml").write_text("learning_rate: {min: 1.0e-4, max: 1.0e-3}\nweight_decay: null\n")
    args = cli_args(tiny_model_dir, tmp_path, "--max-trials", "2", "--search-space", str(tmp_path / "space.yaml"))
    assert main(args) == 0
    out = tmp_path / "tune"
    assert len(list((out / "search").glob("trial_*/trial.json"))) == 2
    trials = json.loads((out / "trials.json").read_text())
    assert trials["completed"] == 2 and (out / "trials.csv").is_file() and (out / "trials.png").stat().st_size > 0
    assert all(1e-4 <= t["hyperparameters"]["learning_rate"] <= 1e-3 and "weight_decay" not in t["hyperparameters"]
               for t in trials["trials"])
    assert "tfft tune: 2 trials completed, 0 failed" in capsys.readouterr().out
    best = trials["trials"][0]
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert metrics["best"]["val_f1"] == pytest.approx(best["objective"])
    assert TrainConfig.load(out / "best" / "config.yaml").learning_rate == best["hyperparameters"]["learning_rate"]
    assert main(["evaluate", str(out / "best"), "--data", NER["validation"]]) == 0
    assert "f1=" in capsys.readouterr().out and (out / "best" / "reports" / "ner_valid.txt").is_file()

    # The same command again resumes a finished search: it says so and runs no trial, even from a project
    # whose oracle.json still lists its last ended trial as running (as KerasTuner's end_trial leaves it).
    oracle_file = out / "search" / "oracle.json"
    state = json.loads(oracle_file.read_text())
    state["ongoing_trials"] = {"tuner0": state["end_order"][-1]}
    oracle_file.write_text(json.dumps(state))
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "Reloading Tuner" in output and "is finished: its 2 trials have ended (--max-trials 2)" in output
    assert len(list((out / "search").glob("trial_*/trial.json"))) == 2
    assert set(json.loads(oracle_file.read_text())["run_times"].values()) == {1}  # no trial ran again


def test_a_search_that_cannot_be_resumed_is_refused_naming_the_file_and_overwrite(tiny_model_dir, tmp_path, capsys):
    from tfft.cli import main
    from tfft.tuning import create_tuner

    config = small_config(tiny_model_dir, tmp_path)
    create_tuner(config, tuner="random", max_trials=2, space=small_space(config)).save()  # a random search's project
    project = tmp_path / "tune" / "search"
    for tuner in ("bayesian", "hyperband"):
        assert main(cli_args(tiny_model_dir, tmp_path, "--max-trials", "2", "--tuner", tuner)) == 2
        assert capsys.readouterr().err.strip() == (
            f"tfft tune: error: {project / 'tuner0.json'}: the search in {project} was started with --tuner random; "
            "rerun with --tuner random, or pass --overwrite to discard it")
    (project / "tuner0.json").write_text("{}")  # a project of tfft 0.4.1, which did not record its --tuner
    oracle_file = project / "oracle.json"
    assert main(cli_args(tiny_model_dir, tmp_path, "--max-trials", "2", "--tuner", "bayesian")) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"tfft tune: error: {oracle_file}: cannot resume the search with --tuner bayesian: it was started "
                     "with another --tuner (or another KerasTuner version); rerun with its own --tuner, or pass "
                     "--overwrite to discard it")
    oracle_file.write_text('{"ongoing_trials": ')  # cut short (a full disk, a copy interrupted)
    assert main(cli_args(tiny_model_dir, tmp_path, "--max-trials", "2")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tfft tune: error: {oracle_file}: cannot resume the search in ")
    assert "--overwrite" in error and "\n" not in error and "Traceback" not in error
    assert not (tmp_path / "tune" / "best").exists()


def test_retrain_on_all_fits_the_best_configuration_on_train_and_validation(tiny_model_dir, tmp_path):
    from tfft.tuning import create_tuner, export_best

    config = small_config(tiny_model_dir, tmp_path)
    tuner = create_tuner(config, tuner="random", max_trials=1, space=small_space(config))
    tuner.search(verbose=0)
    (trial,) = tuner.oracle.trials.values()
    result = export_best(tuner, tmp_path / "best", retrain_on_all=True)
    assert len(result.history["loss"]) == tuner.epochs_to_best(trial)
    saved = TrainConfig.load(tmp_path / "best" / "config.yaml")
    assert saved.validation is None and saved.learning_rate == trial.hyperparameters["learning_rate"]


def test_importing_tfft_and_its_cli_does_not_import_keras_tuner():
    code = ("import sys, tfft, tfft.cli, tfft.tuning; tfft.cli.build_parser(); "
            "assert 'keras_tuner' not in sys.modules, 'keras_tuner imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
