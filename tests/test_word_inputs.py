"""Word shapes follow the model through the Python API: a shaped model never silently gets zero token types."""

import numpy as np
import pytest

from tfft.data import LabelMap, TokenExample
from tfft.errors import ConfigError
from tfft.evaluation import evaluate_examples
from tfft.models import build_model, takes_word_shapes, word_inputs_for
from tfft.prediction import Predictor
from tfft.training.callbacks import ValidationMetrics
from tfft.words import WordInputs

TAGS = LabelMap(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
EXAMPLES = [TokenExample(tokens=["Anna", "flew", "to", "Tokyo", "."], tags=["B-PER", "O", "O", "B-LOC", "O"]),
            TokenExample(tokens=["ACME", "met", "Anna", "in", "Paris"], tags=["O", "O", "B-PER", "O", "B-LOC"])]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return {shaped: build_model("token-classification", TAGS, str(tiny_model_dir), word_shapes=shaped)
            for shaped in (False, True)}


def test_the_model_says_whether_it_takes_shapes(models):
    assert takes_word_shapes(models[True]) is True and takes_word_shapes(models[False]) is False
    assert takes_word_shapes(object()) is None  # e.g. a TFLite classifier: the caller's settings stand
    assert word_inputs_for(models[True]) == WordInputs(shapes=True)
    assert word_inputs_for(models[False]) == WordInputs(shapes=False)
    assert word_inputs_for(object(), WordInputs(shapes=True)) == WordInputs(shapes=True)
    with pytest.raises(ConfigError, match="built with word shapes .type_vocab_size 8.; leave word_inputs unset"):
        word_inputs_for(models[True], WordInputs(shapes=False))
    with pytest.raises(ConfigError, match="built without word shapes"):
        word_inputs_for(models[False], WordInputs(shapes=True))


def test_predictor_and_evaluation_give_a_shaped_model_its_shapes(models, tiny_tokenizer):
    shaped = models[True]
    predictor = Predictor(shaped, tiny_tokenizer, "token-classification", TAGS)
    assert predictor.word_inputs.shapes
    explicit = Predictor(shaped, tiny_tokenizer, "token-classification", TAGS, word_inputs=WordInputs(shapes=True))
    texts = ["Anna flew to Tokyo.", "ACME met Anna in Paris"]
    assert predictor.predict(texts) == explicit.predict(texts)
    with pytest.raises(ConfigError, match="built with word shapes"):
        Predictor(shaped, tiny_tokenizer, "token-classification", TAGS, word_inputs=WordInputs())
    default = evaluate_examples(shaped, tiny_tokenizer, EXAMPLES, TAGS)
    assert default.to_dict() == evaluate_examples(shaped, tiny_tokenizer, EXAMPLES, TAGS,
                                                  word_inputs=WordInputs(shapes=True)).to_dict()
    with pytest.raises(ConfigError, match="built with word shapes"):
        evaluate_examples(shaped, tiny_tokenizer, EXAMPLES, TAGS, word_inputs=WordInputs())


def test_validation_metrics_encode_shapes_for_the_model_keras_gives_them(models, tiny_tokenizer):
    metrics = ValidationMetrics.from_examples(tiny_tokenizer, EXAMPLES, TAGS)
    assert not np.any(metrics.encoding.token_type_ids)
    metrics.set_model(models[True])
    # Every subword of a word gets 1 + its shape: Anna is Title (2), "." other (6), ACME upper (3).
    assert set(np.unique(metrics.encoding.token_type_ids)) - {0} >= {2, 3, 6}
    reference = ValidationMetrics.from_examples(tiny_tokenizer, EXAMPLES, TAGS, word_inputs=WordInputs(shapes=True))
    np.testing.assert_array_equal(metrics.encoding.token_type_ids, reference.encoding.token_type_ids)
    reference.set_model(models[True])
    assert metrics.score() == reference.score()
    mismatched = ValidationMetrics.from_examples(tiny_tokenizer, EXAMPLES, TAGS, word_inputs=WordInputs())
    with pytest.raises(ConfigError, match="built with word shapes"):
        mismatched.set_model(models[True])
