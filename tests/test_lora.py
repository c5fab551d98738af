"""LoRA: fresh adapters leave the function unchanged, only adapters and head train (counted by
hand on the tiny BERT), the optimizer holds state for nothing else, frozen weights stay
bit-identical through training, a run saves the adapters alone and reloads them exactly, and
the merged export computes what the unmerged model does."""

import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLE_DATA, write_tiny_checkpoint
from tfft.backend import keras, tf
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.errors import ConfigError, ModelLoadError
from tfft.lean_bert import lean_logits
from tfft.lora import (
    ADAPTERS_FILE, LoraDense, LoraSettings, add_adapters, base_fingerprint, describe, load_adapted_model,
    loaded_weight_files, merge_adapters, save_adapters, trainable_count,
)
from tfft.models import build_model

TOKEN, SEQUENCE = "token-classification", "sequence-classification"
LABELS = LabelMap(["O", "B-PER", "I-PER"])
# The tiny BERT: hidden 8, feed-forward 16, 1 layer; rank 2 adapters.
QUERY_VALUE = LoraSettings(rank=2, alpha=4.0, dropout=0.0, projections=("query", "value"))
ALL = LoraSettings(rank=2, alpha=4.0, dropout=0.0,
                   projections=("query", "key", "value", "attention_output", "intermediate", "output"))
FEATURES = {"input_ids": tf.constant([[2, 5, 6, 7, 8, 3], [2, 11, 12, 3, 0, 0]]),
            "attention_mask": tf.constant([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
            "token_type_ids": tf.constant([[0, 1, 2, 3, 1, 0], [0, 2, 1, 0, 0, 0]])}  # word shapes
PLAIN = {**FEATURES, "token_type_ids": tf.zeros([2, 6], tf.int32)}


def logits(model, features=FEATURES):
    return model(features, training=False).logits.numpy()


def attended(logits):
    """Logits where FEATURES' attention mask is 1 (the lean pass computes no padding)."""
    return logits[FEATURES["attention_mask"].numpy().astype(bool)]


def randomise_adapters(model, seed=0):
    """Non-zero B matrices (fresh ones are zero), so adapters change the function."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))


def test_fresh_adapters_leave_the_pretrained_function_unchanged(tiny_model_dir):
    model = build_model(TOKEN, LABELS, str(tiny_model_dir), word_shapes=True)
    before = logits(model)
    add_adapters(model, ALL, word_shapes=True)
    assert sum(isinstance(layer, LoraDense) for layer in model.submodules) == 6
    np.testing.assert_array_equal(logits(model), before)  # B = 0
    np.testing.assert_allclose(attended(lean_logits(model, FEATURES).numpy()), attended(before), atol=1e-6)


@pytest.mark.parametrize("task, settings, word_shapes, adapters", [
    # query and value: A [8, 2] + B [2, 8] each
    (TOKEN, QUERY_VALUE, False, 2 * (8 * 2 + 2 * 8)),
    # + key and attention output (8 -> 8), intermediate (8 -> 16: 8*2 + 2*16), output (16 -> 8: 16*2 + 2*8)
    (SEQUENCE, ALL, False, 4 * (8 * 2 + 2 * 8) + (8 * 2 + 2 * 16) + (16 * 2 + 2 * 8)),
])
def test_only_adapters_and_head_train(tiny_model_dir, task, settings, word_shapes, adapters):
    model = build_model(task, LABELS, str(tiny_model_dir), word_shapes=word_shapes)
    total = sum(int(tf.size(v)) for v in model.weights)
    add_adapters(model, settings, word_shapes=word_shapes)
    head = 8 * 3 + 3  # classifier kernel and bias; a sequence classifier's pooler stays frozen
    assert trainable_count(model) == adapters + head
    assert describe(model, settings).endswith(f": {adapters + head:,} trainable of {total + adapters:,} values "
                                              f"({100 * (adapters + head) / (total + adapters):.2f}%)")
    assert sum(int(tf.size(v)) for v in model.non_trainable_variables) == total - head


def test_word_shape_rows_keep_training(tiny_model_dir):
    """The widened token type embedding is new (rows 1-7 copy row 0), so it trains with the adapters."""
    model = build_model(TOKEN, LABELS, str(tiny_model_dir), word_shapes=True)
    add_adapters(model, QUERY_VALUE, word_shapes=True)
    token_types = model.bert.embeddings.token_type_embeddings
    assert any(v is token_types for v in model.trainable_variables)
    assert trainable_count(model) == 2 * (8 * 2 + 2 * 8) + 8 * 3 + 3 + int(tf.size(token_types))


@pytest.fixture
def lora_config(tiny_model_dir, tmp_path):
    return TrainConfig(
        task=TOKEN, train=str(SAMPLE_DATA / "ner_train.txt"), validation=str(SAMPLE_DATA / "ner_valid.txt"),
        model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), epochs=2, batch_size=16,
        max_train_examples=64, max_validation_examples=32, tensorboard=False, lora_rank=2, word_shapes=True,
    )


@pytest.mark.parametrize("options", [dict(), dict(precision="bf16", gradient_accumulation_steps=2),
                                     dict(gradient_checkpointing=True)])
def test_a_training_step_moves_adapters_and_head_and_nothing_frozen(lora_config, options):
    from tfft.distribution import Cluster
    from tfft.training.data import prepare_data
    from tfft.training.model import create_model

    data = prepare_data(TrainConfig(**{**lora_config.to_dict(), **options}))
    config = data.config
    dataset, steps_per_epoch = data.train_dataset(config, Cluster.current())
    model = create_model(config, data.label_map, steps_per_epoch)
    frozen = [v.numpy().copy() for v in model.non_trainable_variables]
    trained = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(dataset.take(1), epochs=1, verbose=0)  # one update (of two micro-batches with accumulation)
    for before, variable in zip(frozen, model.non_trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.name)
    for before, variable in zip(trained, model.trainable_variables):
        assert not np.array_equal(variable.numpy(), before), variable.name
    # AdamW's moments exist only for the trainable variables (plus the step counter).
    slots = [v for v in model.optimizer.variables if v.shape.rank]
    assert len(slots) == 2 * len(model.trainable_variables)
    assert sorted(tuple(s.shape) for s in slots) == sorted(2 * [tuple(v.shape) for v in model.trainable_variables])


def test_saved_adapters_reload_to_the_same_function_and_refuse_other_bases(tiny_model_dir, tmp_path):
    model = build_model(SEQUENCE, LABELS, str(tiny_model_dir))
    add_adapters(model, ALL)
    randomise_adapters(model)
    path = save_adapters(model, tmp_path / "model", str(tiny_model_dir))
    assert sorted(p.name for p in path.parent.iterdir()) == [ADAPTERS_FILE, "config.json"]
    reloaded = load_adapted_model(SEQUENCE, tmp_path / "model", str(tiny_model_dir), ALL)
    np.testing.assert_array_equal(logits(reloaded, PLAIN), logits(model, PLAIN))

    with pytest.raises(ModelLoadError, match="do not match the run's LoRA settings"):
        load_adapted_model(SEQUENCE, tmp_path / "model", str(tiny_model_dir), QUERY_VALUE)
    other = write_tiny_checkpoint(tmp_path / "other-base")  # same shapes, other random weights
    with pytest.raises(ModelLoadError, match="adapters were trained on base model"):
        load_adapted_model(SEQUENCE, tmp_path / "model", str(other), ALL)


def test_the_fingerprint_covers_the_weight_files_from_pretrained_loads(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    with_h5 = base_fingerprint(str(base))
    assert with_h5["base_weights"] == "tf_model.h5"
    # A safetensors file beside tf_model.h5 is what from_pretrained loads: its weights are fingerprinted.
    other = build_model(SEQUENCE, LABELS, str(write_tiny_checkpoint(tmp_path / "other")))
    other.save_pretrained(str(tmp_path / "other-safetensors"), safe_serialization=True)
    shutil.copy(tmp_path / "other-safetensors" / "model.safetensors", base)
    assert loaded_weight_files(base) == [base / "model.safetensors"]
    with_safetensors = base_fingerprint(str(base))
    assert with_safetensors["base_weights"] == "model.safetensors"
    assert with_safetensors["base_weights_sha256"] != with_h5["base_weights_sha256"]
    loaded = build_model(SEQUENCE, LABELS, str(base))
    np.testing.assert_array_equal(loaded.bert.embeddings.weight.numpy(), other.bert.embeddings.weight.numpy())
    # A sharded checkpoint: the index and every shard it names, each change seen.
    (base / "model.safetensors").unlink()
    (base / "tf_model.h5").unlink()
    (base / "tf_model.h5.index.json").write_text(json.dumps({"weight_map": {"a": "s-2.h5", "b": "s-1.h5", "c": "s-2.h5"}}))
    for shard in ("s-1.h5", "s-2.h5"):
        (base / shard).write_bytes(shard.encode())
    assert loaded_weight_files(base) == [base / "tf_model.h5.index.json", base / "s-1.h5", base / "s-2.h5"]
    sharded = base_fingerprint(str(base))
    (base / "s-2.h5").write_bytes(b"changed")
    assert base_fingerprint(str(base))["base_weights_sha256"] != sharded["base_weights_sha256"]
    (base / "s-1.h5").unlink()
    with pytest.raises(ModelLoadError, match="s-1.h5: a shard that .* names is missing"):
        base_fingerprint(str(base))


def test_a_lora_run_records_its_base_absolutely_and_predicts_from_elsewhere(lora_config, tiny_model_dir, tmp_path,
                                                                             monkeypatch):
    from tfft.prediction import Predictor
    from tfft.training.trainer import train

    (tmp_path / "project").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "project" / "base")
    monkeypatch.chdir(tmp_path / "project")
    config = TrainConfig(**{**lora_config.to_dict(), "model": "base", "epochs": 1, "output_dir": "runs/lora"})
    run_dir = train(config).run_dir.resolve()
    assert TrainConfig.load(run_dir / "config.yaml").model == str(tmp_path / "project" / "base")
    expected = Predictor.from_run_dir(run_dir).predict(["Anna flew to Tokyo."])
    monkeypatch.chdir(tmp_path)  # where "base" means nothing
    assert Predictor.from_run_dir(run_dir).predict(["Anna flew to Tokyo."]) == expected
    write_tiny_checkpoint(tmp_path / "project" / "base")  # the base changed since training
    with pytest.raises(ModelLoadError, match="adapters were trained on base model"):
        Predictor.from_run_dir(run_dir)


def test_merged_adapters_compute_the_unmerged_function(tiny_model_dir):
    model = build_model(TOKEN, LABELS, str(tiny_model_dir), word_shapes=True)
    add_adapters(model, ALL, word_shapes=True)
    randomise_adapters(model)
    unmerged = logits(model)
    assert np.abs(unmerged - logits(build_model(TOKEN, LABELS, str(tiny_model_dir), word_shapes=True))).max() > 0.1
    merge_adapters(model)
    assert not any(isinstance(layer, LoraDense) for layer in model.submodules)
    np.testing.assert_allclose(logits(model), unmerged, atol=1e-5)
    np.testing.assert_allclose(attended(lean_logits(model, FEATURES).numpy()), attended(unmerged), atol=1e-5)


def test_lora_run_saves_adapters_alone_and_evaluate_predict_export_load_them(lora_config, tmp_path):
    from tfft.cli import main
    from tfft.evaluation import evaluate_run
    from tfft.export.saved_model import export_run
    from tfft.prediction import Predictor
    from tfft.run_dir import load_run
    from tfft.training.trainer import train

    result = train(lora_config)
    model_dir = result.run_dir / "model"
    assert (model_dir / ADAPTERS_FILE).is_file() and not (model_dir / "tf_model.h5").exists()
    saved = TrainConfig.load(result.run_dir / "config.yaml")
    assert (saved.lora_rank, saved.lora_alpha, saved.lora_dropout, saved.lora_targets) == (2, 16.0, 0.1, "query-value")
    assert saved.learning_rate == 2e-3  # LoRA's default

    report = evaluate_run(result.run_dir, lora_config.validation)
    assert report.scores["f1"] == pytest.approx(result.best_scores["val_f1"], abs=1e-6)
    assert Predictor.from_run_dir(result.run_dir).predict(["Anna flew to Tokyo"])[0]["words"]

    _, model, _ = load_run(result.run_dir, precision="fp32")
    export = export_run(result.run_dir, "ner", export_dir=tmp_path / "exports")
    card = json.loads((export / "assets" / "model_card.json").read_text())
    assert card["lora_rank"] == 2
    serving = tf.saved_model.load(str(export)).signatures["predict_ids"]
    exported = serving(**{k: tf.cast(v, tf.int32) for k, v in FEATURES.items()})["logits"].numpy()
    np.testing.assert_allclose(attended(exported), attended(logits(model)), atol=1e-5)

    shutil.rmtree(result.run_dir / "reports")
    assert main(["evaluate", str(result.run_dir), "--data", lora_config.validation]) == 0


def test_lora_options_are_checked_and_defaulted():
    base = dict(task=TOKEN, train="train.txt")
    config = TrainConfig(**base, lora_rank=8)
    assert (config.lora_alpha, config.lora_dropout, config.lora_targets, config.learning_rate) == (
        16.0, 0.1, "query-value", 2e-3)
    assert TrainConfig(**base).lora_alpha is None and TrainConfig(**base).learning_rate == 2e-4
    for options, message in [
        (dict(lora_rank=-1), "'lora_rank' option must be an integer from 0"),
        (dict(lora_alpha=32), "'lora_alpha' option applies to LoRA only; set --lora-rank"),
        (dict(lora_targets="all"), "'lora_targets' option applies to LoRA only"),
        (dict(lora_rank=4, lora_alpha=0), "'lora_alpha' option must be a finite number > 0"),
        (dict(lora_rank=4, lora_dropout=1.0), r"'lora_dropout' option must be a number in \[0, 1\)"),
        (dict(lora_rank=4, lora_targets="mlp"), "'lora_targets' option must be one of query-value, attention, all"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**base, **options).validate()


def test_tune_searches_the_rank_of_a_lora_run():
    import keras_tuner as kt

    from tfft.tuning import Dimension, SearchSpace

    config = TrainConfig(task=TOKEN, train="train.txt", lora_rank=8)
    space = SearchSpace.default(config).updated({"lora_rank": [4, 16]})
    assert space.lora_rank == Dimension(choices=(4, 16))
    assert space.learning_rate == Dimension(1e-4, 3e-3, sampling="log")  # LoRA's larger steps
    hp = kt.HyperParameters()
    hp.Fixed("lora_rank", 16)
    trial = space.apply(hp, config)
    assert (trial.lora_rank, trial.lora_alpha) == (16, 16.0)  # alpha stays: the scale follows the rank
    with pytest.raises(ConfigError, match="'lora_rank' values must be >= 1"):
        SearchSpace.default(config).updated({"lora_rank": [0, 8]})
    with pytest.raises(ConfigError, match="Searching 'lora_rank' needs a LoRA run"):
        space.apply(kt.HyperParameters(), TrainConfig(task=TOKEN, train="train.txt"))


def test_cli_tune_searches_lora_ranks_and_writes_an_adapter_run(tiny_model_dir, tmp_path):
    from tfft.cli import main

    out = tmp_path / "tune"
    assert main(["tune", "--task", TOKEN, "--train", str(SAMPLE_DATA / "ner_train.txt"),
                 "--validation", str(SAMPLE_DATA / "ner_valid.txt"), "--model", str(tiny_model_dir),
                 "--output-dir", str(out), "--epochs", "1", "--max-train-examples", "32",
                 "--max-validation-examples", "16", "--no-tensorboard", "--batch-sizes", "16", "--max-trials", "2",
                 "--lora-rank", "4", "--lora-ranks", "2,8"]) == 0
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert {t["hyperparameters"]["lora_rank"] for t in trials} <= {2, 8}
    assert all(1e-4 <= t["hyperparameters"]["learning_rate"] <= 3e-3 for t in trials)
    best = TrainConfig.load(out / "best" / "config.yaml")
    assert best.lora_rank == trials[0]["hyperparameters"]["lora_rank"]
    assert (out / "best" / "model" / ADAPTERS_FILE).is_file()
