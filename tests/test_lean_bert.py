"""The lean inference forward pass computes what the transformers model computes."""

import numpy as np
import pytest

from tfft.backend import keras, tf
from tfft.data.labels import LabelMap
from tfft.lean_bert import inference_logits, lean_logits, supports_lean_forward
from tfft.models import build_model

TAGS = LabelMap(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


def features(batch: int = 3, length: int = 11, vocab: int = 30, seed: int = 0, pad_token_id: int = 0,
             type_vocab: int = 2):
    """Random ids with ragged padding (``pad_token_id``) and a second segment where the model has two token
    types, as the data pipeline produces them."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 2:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[0, 5:] = type_vocab - 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


@pytest.mark.parametrize("family", ["bert", "electra", "roberta", "xlm-roberta"])
@pytest.mark.parametrize("task,labels,expected_shape", [
    ("token-classification", TAGS, (3, 11, 5)),
    ("sequence-classification", LabelMap(["negative", "neutral", "positive"]), (3, 3)),
])
def test_lean_logits_equal_the_transformers_call(family, family_checkpoint, task, labels, expected_shape):
    """Every family of BERT's block layout: BERT's pooled sequence head, ELECTRA's embedding projection and
    gelu head, RoBERTa's positions past the padding id and first-token head."""
    model = build_model(task, labels, str(family_checkpoint(family)))
    inputs = features(vocab=model.config.vocab_size, pad_token_id=model.config.pad_token_id,
                      type_vocab=model.config.type_vocab_size)
    assert supports_lean_forward(model)
    expected = model(inputs, training=False).logits.numpy()
    lean = tf.function(lambda f: lean_logits(model, f))(inputs).numpy()
    assert lean.shape == expected.shape == expected_shape
    if task == "token-classification":  # padding is never computed: its logits are zeros
        attended = inputs["attention_mask"].astype(bool)
        np.testing.assert_array_equal(lean[~attended], 0.0)
        lean, expected = lean[attended], expected[attended]
    np.testing.assert_allclose(lean, expected, atol=1e-5, rtol=1e-5)
    # A batch of one padding-free row, the serving case.
    single = {name: value[:1] for name, value in inputs.items()}
    np.testing.assert_allclose(lean_logits(model, single).numpy(), model(single).logits.numpy(), atol=1e-5, rtol=1e-5)


def test_lean_logits_follow_a_bfloat16_policy(tiny_model_dir):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("token-classification", TAGS, str(tiny_model_dir))
        inputs = features()
        expected = model(inputs, training=False).logits
        lean = lean_logits(model, inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert lean.dtype == expected.dtype == tf.bfloat16
    mask = inputs["attention_mask"].astype(bool)
    lean, expected = lean.numpy().astype(np.float32)[mask], expected.numpy().astype(np.float32)[mask]
    np.testing.assert_allclose(lean, expected, atol=0.05)


def test_other_architectures_fall_back_to_the_model_call():
    from transformers import DistilBertConfig, TFDistilBertForTokenClassification

    config = DistilBertConfig(vocab_size=30, dim=8, n_layers=1, n_heads=2, hidden_dim=16, num_labels=5,
                              max_position_embeddings=32)
    model = TFDistilBertForTokenClassification(config)
    inputs = features()
    del inputs["token_type_ids"]
    assert not supports_lean_forward(model)
    np.testing.assert_allclose(inference_logits(model, inputs).numpy(),
                               model(inputs, training=False).logits.numpy(), atol=1e-6)


def test_float32_gelu_is_the_exact_gelu_with_its_gradient():
    from tfft.models import float32_gelu

    x = tf.constant(np.linspace(-6, 6, 101), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, reference = float32_gelu(x), tf.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(reference, x).numpy(), atol=1e-6)
    assert float32_gelu(tf.cast(x, tf.bfloat16)).dtype == tf.bfloat16


def test_bfloat16_models_compute_gelu_in_float32(tiny_model_dir):
    from tfft.models import float32_gelu, set_precision

    set_precision("bf16")
    try:
        model = build_model("token-classification", TAGS, str(tiny_model_dir))
    finally:
        set_precision("fp32")
    activations = [layer.intermediate_act_fn for layer in model.submodules if hasattr(layer, "intermediate_act_fn")]
    assert activations == [float32_gelu]
    fp32_model = build_model("token-classification", TAGS, str(tiny_model_dir))
    assert all(layer.intermediate_act_fn is not float32_gelu
               for layer in fp32_model.submodules if hasattr(layer, "intermediate_act_fn"))
