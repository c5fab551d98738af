"""What a sequence head reads (tfft/pooling.py): the checkpoint's own pooling by default, the mean of the last
layer over real tokens on every family, the same vector through the model's call and the lean pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfft.backend import tf
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.errors import ConfigError
from tfft.families import REGISTRY
from tfft.heads import head_config
from tfft.lean_bert import lean_logits, supports_lean_forward
from tfft.models import DEFAULT_MODEL, build_model, load_tokenizer, load_trained_model, resolve_model
from tfft.pooling import FIRST, MEAN, POOLING, checkpoint_pooling, pooling_of

from families import FAMILY_NAMES

LABELS = LabelMap(["negative", "positive"])
TEXTS = ["a fine film", "Anna Schmidt flew to Tokyo on Monday , and it rained all week ."]


def write_sentence_transformers_files(directory, modes, pooling_path="1_Pooling"):
    directory.mkdir(parents=True, exist_ok=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": pooling_path, "type": "sentence_transformers.models.Pooling"}]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / pooling_path).mkdir()
    settings = {"word_embedding_dimension": 16, **{f"pooling_mode_{m}": m in modes
                                                    for m in ("cls_token", "mean_tokens", "max_tokens")}}
    (directory / pooling_path / "config.json").write_text(json.dumps(settings))
    return directory


def test_the_checkpoints_own_pooling_is_read_from_its_sentence_transformers_modules(tmp_path):
    assert checkpoint_pooling(str(write_sentence_transformers_files(tmp_path / "mean", ["mean_tokens"]))) == MEAN
    assert checkpoint_pooling(str(write_sentence_transformers_files(tmp_path / "moved", ["mean_tokens"],
                                                                    "2_Pool"))) == MEAN
    assert checkpoint_pooling(str(write_sentence_transformers_files(tmp_path / "cls", ["cls_token"]))) == FIRST
    # Mean and max concatenated is not a vector the head can read as one mean.
    assert checkpoint_pooling(str(write_sentence_transformers_files(tmp_path / "both",
                                                                    ["mean_tokens", "max_tokens"]))) == FIRST
    (tmp_path / "plain").mkdir()
    assert checkpoint_pooling(str(tmp_path / "plain")) == FIRST  # a transformers checkpoint: no modules.json
    broken = write_sentence_transformers_files(tmp_path / "broken", ["mean_tokens"])
    (broken / "1_Pooling" / "config.json").write_text("{not json")
    assert checkpoint_pooling(str(broken)) == FIRST
    assert checkpoint_pooling(resolve_model(DEFAULT_MODEL)) == MEAN  # all-MiniLM-L6-v2


def test_auto_pooling_is_recorded_resolved_and_only_sequence_tasks_take_the_option(family_checkpoint):
    checkpoint = str(family_checkpoint("bert"))  # no modules.json: the first token
    model = build_model("sequence-classification", LABELS, checkpoint)
    assert getattr(model.config, POOLING) == FIRST
    model = build_model("regression", LabelMap(["score"]), checkpoint, head=head_config("regression", pooling=MEAN))
    assert getattr(model.config, POOLING) == MEAN
    assert not hasattr(build_model("token-classification", LABELS, checkpoint).config, POOLING)
    with pytest.raises(ConfigError, match="'pooling' option is for"):
        TrainConfig(task="token-classification", train="x.txt", pooling="mean").validate()
    with pytest.raises(ConfigError, match="pooling"):
        TrainConfig(task="sequence-classification", train="x.tsv", pooling="max").validate()


def features_of(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    return {name: tf.constant(value) for name, value in encoded.items()
            if name in ("input_ids", "attention_mask", "token_type_ids")}


def head_on(family: str, model, vector: np.ndarray) -> np.ndarray:
    """The family's transformers head applied by hand to ``vector``, written where the head reads: BERT's and
    ALBERT's classifier without the pooler, DistilBERT's pre-classifier, the others' first-token read (the
    rest of the sequence they are given is noise the head must not read)."""
    if family in ("bert", "albert"):
        return model.classifier(vector).numpy()
    if family == "distilbert":
        return model.classifier(model.pre_classifier(vector)).numpy()
    noise = np.random.default_rng(0).normal(size=(vector.shape[0], 3, vector.shape[1])).astype(np.float32)
    sequence = tf.concat([vector[:, None, :], noise], axis=1)
    if family == "deberta-v2":
        return model.classifier(model.pooler(sequence)).numpy()
    return model.classifier(sequence).numpy()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_mean_pooled_head_reads_the_mean_of_the_last_layer_over_real_tokens(family, family_checkpoint):
    checkpoint = str(family_checkpoint(family))
    model = build_model("sequence-classification", LABELS, checkpoint,
                        head=head_config("sequence-classification", pooling=MEAN))
    tokenizer = load_tokenizer(checkpoint)
    features = features_of(tokenizer, TEXTS)
    inputs = REGISTRY[model.config.model_type].model_inputs(model.config, features)
    hidden = REGISTRY[model.config.model_type].base_model(model)(**inputs, training=False)[0].numpy()
    mask = features["attention_mask"].numpy()
    mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    logits = model(features, training=False).logits.numpy()
    np.testing.assert_allclose(logits, head_on(family, model, mean), atol=1e-5)
    # The short text alone (no padding) gets what it gets padded beside the long one.
    alone = model(features_of(tokenizer, TEXTS[:1]), training=False).logits.numpy()
    np.testing.assert_allclose(alone[0], logits[0], atol=1e-5)
    if supports_lean_forward(model):  # the lean pass pools its own way (segment sums over kept tokens)
        np.testing.assert_allclose(lean_logits(model, features).numpy(), logits, atol=1e-5)


def test_mean_pooling_trains_the_head_not_the_bypassed_pooler(family_checkpoint):
    model = build_model("sequence-classification", LABELS, str(family_checkpoint("bert")),
                        head=head_config("sequence-classification", pooling=MEAN))
    features = features_of(load_tokenizer(str(family_checkpoint("bert"))), TEXTS)
    pooler = {id(v) for v in model.bert.pooler.weights}
    assert pooler and not pooler & {id(v) for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(features, training=True).logits[:, 1])
    gradients = tape.gradient(loss, model.trainable_variables)
    named = {v.name: g for v, g in zip(model.trainable_variables, gradients)}
    assert all(g is not None for g in named.values()), [n for n, g in named.items() if g is None]
    assert float(tf.reduce_sum(tf.abs(named[model.classifier.kernel.name]))) > 0


def test_a_saved_model_keeps_its_pooling_and_one_saved_without_reads_its_first_token(family_checkpoint, tmp_path):
    checkpoint = str(family_checkpoint("roberta"))
    features = features_of(load_tokenizer(checkpoint), TEXTS)
    model = build_model("sequence-classification", LABELS, checkpoint,
                        head=head_config("sequence-classification", pooling=MEAN))
    model.save_pretrained(str(tmp_path / "mean"))
    reloaded = load_trained_model("sequence-classification", tmp_path / "mean")
    assert pooling_of(reloaded.config) == MEAN
    np.testing.assert_allclose(reloaded(features).logits.numpy(), model(features).logits.numpy(), atol=1e-6)

    config = json.loads((tmp_path / "mean" / "config.json").read_text())
    del config[POOLING]  # as a run of tfft 0.5.1 or earlier saved it
    (tmp_path / "mean" / "config.json").write_text(json.dumps(config))
    old = load_trained_model("sequence-classification", tmp_path / "mean")
    from transformers import TFRobertaForSequenceClassification

    plain = TFRobertaForSequenceClassification.from_pretrained(str(tmp_path / "mean"))
    assert pooling_of(old.config) == FIRST
    np.testing.assert_allclose(old(features).logits.numpy(), plain(features).logits.numpy(), atol=1e-6)
    assert not np.allclose(old(features).logits.numpy(), model(features).logits.numpy(), atol=1e-4)
