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


def entity_token_spans(tags):
    """(type, first token, last token + 1) of each IOB2 entity, via seqeval (independent of tfft's decoder)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return sorted((kind, start, end + 1) for kind, start, end in get_entities(list(tags)))


def written_token_spans(prediction, token_offsets):
    """Entities predicted on written text, as token indices where they match token boundaries exactly
    (an entity that does not start and end at tokens counts as one that no gold entity equals)."""
    starts = {start: index for index, (start, _) in enumerate(token_offsets)}
    ends = {end: index + 1 for index, (_, end) in enumerate(token_offsets)}
    return sorted((e["type"], starts.get(e["start"], -1), ends.get(e["end"], -1)) for e in prediction["entities"])


def test_ner_on_a_conll_slice_learns_and_written_text_predictions_match_the_evaluation(tmp_path):
    """Text as people write it (``Paris.``, ``(Reuters)``, ``Apple's``), through ``predict`` and the
    SavedModel, gives the entities ``evaluate`` scores on the gold tokens, on a 200-sentence slice
    (200, not more: the test predicts the slice six times, in the fit, evaluate, predict and the SavedModel)."""
    from seqeval.metrics import f1_score

    from tfft.data.natural import natural_text
    from tfft.evaluation import evaluate_run
    from tfft.export.predictor import SavedModelPredictor
    from tfft.export.saved_model import export_run
    from tfft.features import encode_for_inference
    from tfft.inference import predict_encoded
    from tfft.metrics import tags_from_probabilities
    from tfft.run_dir import load_run_config, read_config_examples

    config = TrainConfig(
        task="token-classification", train=str(shared_file("conll2003/train.txt")),
        validation=str(shared_file("conll2003/valid.txt")), output_dir=str(tmp_path / "ner"),
        epochs=1, batch_size=16, max_train_examples=1000, max_validation_examples=200, tensorboard=False,
    )
    result = train(config)
    # 63 steps from a sentence-embedding checkpoint: measured F1 ~0.6 with word shapes; chance is ~0.
    assert result.best_scores["val_f1"] > 0.4, result.best_scores
    config = load_run_config(result.run_dir)  # as resolved for the data: word shapes, batch size, ...
    assert config.word_shapes is True  # the default for the uncased default model

    predictor = Predictor.from_run_dir(result.run_dir)
    examples = read_config_examples(config, config.validation, 200)
    encoding = encode_for_inference(predictor.tokenizer, examples, predictor.window_length, predictor.stride,
                                    word_inputs=config.word_inputs)
    probabilities = predict_encoded(predictor.model, encoding, words_per_example=[len(e.tokens) for e in examples])
    evaluated = tags_from_probabilities(probabilities, predictor.label_map.labels)
    report = evaluate_run(result.run_dir, config.validation)
    assert report.scores["f1"] == pytest.approx(result.best_scores["val_f1"])

    written = [natural_text(e.tokens) for e in examples]
    assert sum("," in t or "." in t for t, _ in written) > len(written) // 2  # punctuation attached in most
    served = SavedModelPredictor(export_run(result.run_dir, "ner", export_dir=tmp_path / "exports"))
    gold = [list(e.tags) for e in examples]
    for path in (predictor, served):
        predictions = path.predict([text for text, _ in written])
        spans = [written_token_spans(p, offsets) for p, (_, offsets) in zip(predictions, written)]
        same = sum(s == entity_token_spans(t) for s, t in zip(spans, evaluated))
        assert same / len(examples) >= 0.99, (type(path).__name__, same)
        tags = [["O"] * len(e.tokens) for e in examples]
        for sentence, found in zip(tags, spans):
            for kind, start, end in found:
                if start >= 0 and end >= 0:
                    sentence[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
        assert f1_score(gold, tags) == pytest.approx(report.scores["f1"], abs=0.005), type(path).__name__
    [prediction] = predictor.predict(["The European Commission met in Brussels on Monday."])
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
