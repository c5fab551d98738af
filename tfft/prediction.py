"""Prediction on raw text with a trained run: entity spans or labels with probabilities.

The run directory is the single source of truth: the label map is read from the saved
model's config, max length/stride from ``config.yaml``, the tokenizer from ``model/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tfft.config import TrainConfig
from tfft.data.examples import TextExample, TokenExample
from tfft.data.labels import LabelMap
from tfft.data.tags import iob2_spans
from tfft.decoding import viterbi_tags
from tfft.errors import ConfigError, DataFormatError
from tfft.features import encode_for_inference, inference_length
from tfft.inference import Forward, forward_function, predict_with
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, TOKEN_CLASSIFICATION
from tfft.heads import at_least_one_of, thresholds_of
from tfft.metrics import decide
from tfft.models import label_map_of, word_inputs_for
from tfft.run_dir import load_run
from tfft.words import NATURAL, WHITESPACE, WordInputs, word_spans

@dataclass
class Predictor:
    """A trained model with what it needs to turn raw text into predictions."""

    model: object
    tokenizer: object
    task: str
    label_map: LabelMap
    stride: int = 32
    batch_size: int = 64
    jit_compile: bool = False
    word_inputs: Optional[WordInputs] = None  # default: what the model takes (tfft.models.word_inputs_for)
    with_pairs: bool = False
    max_length: Optional[int] = None  # sequence classification: the training max_length
    word_split: str = NATURAL  # token classification: how raw text is split into words (tfft.words)
    # Multi-label: the decision rule, per label thresholds and "at least one label" (default: the model config's).
    thresholds: Optional[Sequence[float]] = None
    at_least_one: bool = False

    def __post_init__(self) -> None:
        self.word_inputs = word_inputs_for(self.model, self.word_inputs)
        if self.task == MULTI_LABEL_CLASSIFICATION and self.thresholds is None:
            self.thresholds = thresholds_of(getattr(self.model, "config", None), len(self.label_map))
            self.at_least_one = at_least_one_of(getattr(self.model, "config", None))

    @classmethod
    def from_run_dir(cls, run_dir: Union[str, Path], batch_size: Optional[int] = None) -> "Predictor":
        """Load the model, tokenizer and settings a ``tfft train`` run saved."""
        config, model, tokenizer = load_run(run_dir)
        return cls.from_config(config, model, tokenizer, label_map_of(model), batch_size)

    @classmethod
    def from_config(cls, config: TrainConfig, model, tokenizer, label_map: LabelMap,
                    batch_size: Optional[int] = None, thresholds: Optional[Sequence[float]] = None,
                    at_least_one: bool = False) -> "Predictor":
        """A predictor with a run's settings (``config.yaml``) around ``model`` (``thresholds`` and
        ``at_least_one``: a multi-label model's decision rule, when ``model`` has no config to hold it)."""
        return cls(
            model=model,
            tokenizer=tokenizer,
            task=config.task,
            label_map=label_map,
            stride=config.stride,
            batch_size=batch_size or config.eval_batch_size,
            jit_compile=config.xla,
            word_inputs=config.word_inputs,
            with_pairs=bool(config.text_pair_column),
            max_length=config.max_length,
            word_split=config.word_split,
            thresholds=thresholds,
            at_least_one=at_least_one,
        )

    @property
    def window_length(self) -> int:
        """Tokens per row: NER windows of the model's maximum; classification the training max_length."""
        return inference_length(self.tokenizer, self.task, self.max_length)

    def forward(self) -> Forward:
        """Padded token-id batches -> class probabilities: the one step a subclass may run elsewhere
        (:class:`tfft.export.tflite_predictor.TFLitePredictor`); encoding and decoding stay here."""
        return forward_function(self.model, self.jit_compile)

    def _run(self, encoding, words_per_example=None):
        return predict_with(self.forward(), encoding, words_per_example=words_per_example,
                            batch_size=self.batch_size, pad_token_id=self.tokenizer.pad_token_id)

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                one_document: bool = False) -> List[Dict]:
        """One result per text.

        ``one_document`` (token classification, for a run trained with ``--context-window``):
        the texts are consecutive sentences of one document and give each other context.

        Token classification: ``{"text", "entities": [{"type", "text", "start", "end",
        "score"}], "words": [{"text", "start", "end", "tag", "score"}]}`` with character
        offsets into the original string; words are split by the run's ``word_split`` rule
        (see :mod:`tfft.words`). Otherwise :func:`sequence_result`'s object.
        """
        check_pairs(self.with_pairs, text_pairs, "this model")
        if not texts:
            return []
        if self.task == TOKEN_CLASSIFICATION:
            spans = [word_spans(text, self.word_split) for text in texts]
            return self._tag_words(texts, spans, one_document)
        pairs = list(text_pairs) if text_pairs is not None else [None] * len(texts)
        examples = [TextExample(text=t, text_pair=p) for t, p in zip(texts, pairs)]
        encoding = encode_for_inference(self.tokenizer, examples, self.window_length, self.stride)
        outputs = self._run(encoding)
        selected = decide(outputs, self.thresholds, self.at_least_one) if self.thresholds is not None else None
        return [sequence_result(self.task, text, self.label_map.labels, row, None if selected is None else selected[i])
                for i, (text, row) in enumerate(zip(texts, outputs))]

    def predict_words(self, sentences: Sequence[Sequence[str]], one_document: bool = False) -> List[Dict]:
        """Token classification of sentences already split into words, with no word rule applied.

        Each result is :meth:`predict`'s for the text the words make joined by single spaces.
        """
        if self.task != TOKEN_CLASSIFICATION:
            raise ConfigError("words in, entities out: this needs a token-classification model")
        texts = [" ".join(words) for words in sentences]
        return self._tag_words(texts, [joined_spans(words) for words in sentences], one_document)

    def _tag_words(self, texts: Sequence[str], spans: Sequence[Sequence[Tuple[int, int]]],
                   one_document: bool) -> List[Dict]:
        """Tag the words at ``spans`` of each text exactly as evaluation tags CoNLL tokens (same encoding,
        windows, decoding)."""
        words = [[text[s:e] for s, e in found] for text, found in zip(texts, spans)]
        examples = [TokenExample(tokens=w, document=0 if one_document else None) for w in words]
        encoding = encode_for_inference(self.tokenizer, examples, self.window_length, self.stride,
                                        word_inputs=self.word_inputs)
        probabilities = self._run(encoding, [len(w) for w in words])
        labels = self.label_map.labels
        results = []
        for text, found, word_probs, tag_ids in zip(texts, spans, probabilities,
                                                    viterbi_tags(probabilities, labels)):
            scores = word_probs[np.arange(len(tag_ids)), tag_ids]
            results.append(entity_result(text, found, [labels[i] for i in tag_ids], scores))
        return results


def joined_spans(words: Sequence[str]) -> List[Tuple[int, int]]:
    """Each word's ``(start, end)`` in the words joined by single spaces."""
    starts = np.cumsum([0] + [len(w) + 1 for w in words])[:-1].tolist()
    return [(start, start + len(w)) for start, w in zip(starts, words)]


def check_pairs(with_pairs: bool, text_pairs: Optional[Sequence[str]], model: str) -> None:
    """Refuse single texts for a sentence-pair model and pairs for a single-text model."""
    if (text_pairs is not None) != with_pairs:
        raise ConfigError(f"{model} takes " + ("a text_pair with every text (tfft predict --pair-separator SEP)"
                                               if with_pairs else "single texts, not text pairs"))


def entity_result(text: str, spans: Sequence[Tuple[int, int]], tags: Sequence[str], scores: np.ndarray) -> Dict:
    """The JSON object of one token-classification prediction, from its words' tags.

    Shared with :class:`tfft.export.predictor.SavedModelPredictor` so that predictions from a
    run directory and from an exported SavedModel are formatted (and decoded into IOB2
    entities) by the same code. ``spans`` are character offsets into ``text``.
    """
    words = [
        {"text": text[s:e], "start": s, "end": e, "tag": tag, "score": round(float(score), 6)}
        for (s, e), tag, score in zip(spans, tags, scores)
    ]
    entities = []
    for entity_type, first, last in iob2_spans(tags):
        start, end = spans[first][0], spans[last - 1][1]
        entities.append({
            "type": entity_type, "text": text[start:end], "start": start, "end": end,
            "score": round(float(sum(scores[first:last])) / (last - first), 6),
        })
    return {"text": text, "entities": entities, "words": words}


def sequence_result(task: str, text: str, labels: Sequence[str], outputs: np.ndarray,
                    selected: Optional[np.ndarray] = None) -> Dict:
    """The JSON object of one prediction of a sequence task (shared like :func:`entity_result`).

    Sequence classification: ``{"text", "label", "probabilities": {label: p}}``; multi-label:
    ``{"text", "labels": [the labels the decision rule selects, ``selected``], "probabilities"}``;
    regression: ``{"text", "value"}``.
    """
    if task == REGRESSION:
        return {"text": text, "value": round(float(outputs[0]), 6)}
    probabilities = {label: round(float(v), 6) for label, v in zip(labels, outputs)}
    if task == MULTI_LABEL_CLASSIFICATION:
        return {"text": text, "labels": [label for label, chosen in zip(labels, selected) if chosen],
                "probabilities": probabilities}
    return {"text": text, "label": labels[int(np.argmax(outputs))], "probabilities": probabilities}


def read_input_lines(source: str, encoding: str = "utf-8") -> List[str]:
    """Texts to predict, one per line of a file (or of stdin for ``-``), line endings removed.

    Blank lines are kept (they produce an empty result) so output line N answers input line N.
    """
    from tfft.data._common import iter_lines

    return [line.rstrip("\r\n") for line in iter_lines(source, encoding)]


def read_token_lines(source: str, encoding: str = "utf-8") -> List[List[str]]:
    """Pre-tokenized sentences, one JSON object ``{"tokens": [...]}`` per line (blank line: no tokens).

    Tokens must be non-empty and contain no whitespace: each one is then exactly one word
    of the sentence the tokens joined by spaces make (see :func:`predict_tokens`).
    """
    import json

    where = "<stdin>" if source == "-" else source
    sentences = []
    for number, line in enumerate(read_input_lines(source, encoding), start=1):
        if not line.strip():
            sentences.append([])
            continue
        try:
            tokens = json.loads(line).get("tokens")
        except (ValueError, AttributeError):
            tokens = None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError('expected a JSON object with a "tokens" list of strings, e.g. '
                                  '{"tokens": ["Anna", "flew", "to", "Tokyo"]}', where, number)
        bad = [t for t in tokens if word_spans(t, WHITESPACE) != [(0, len(t))]]
        if bad:
            raise DataFormatError(f"tokens must be non-empty and contain no whitespace; found {bad[0]!r}",
                                  where, number)
        unencodable = [t for t in tokens if not _encodes_as_utf8(t)]
        if unencodable:
            raise DataFormatError(f"tokens must be text that UTF-8 can encode; found {unencodable[0]!r} (a lone "
                                  "surrogate such as \\ud800 is not a character)", where, number)
        sentences.append(tokens)
    return sentences


def _encodes_as_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def predict_tokens(predictor, sentences: Sequence[Sequence[str]], **options) -> List[Dict]:
    """Token classification of pre-tokenized sentences with a :class:`Predictor` or a SavedModel predictor.

    The tokens are the words (``predict_words``: no word rule is applied; ``options`` go to
    it); results are ``predict``'s for the tokens joined by single spaces, plus ``tokens``, and
    every entity and word gets ``token_start``/``token_end`` (token indices, end exclusive).
    """
    results = predictor.predict_words(sentences, **options)
    for result, tokens in zip(results, sentences):
        result["tokens"] = list(tokens)
        spans = joined_spans(tokens)
        first = {start: i for i, (start, _) in enumerate(spans)}
        last = {end: i + 1 for i, (_, end) in enumerate(spans)}
        for item in result.get("entities", []) + result.get("words", []):
            item["token_start"], item["token_end"] = first[item["start"]], last[item["end"]]
    return results


def split_pairs(lines: Sequence[str], separator: str, source: str) -> Tuple[List[str], List[str]]:
    """Split each ``TEXT<separator>TEXT_PAIR`` line at the first separator."""
    texts, pairs = [], []
    for number, line in enumerate(lines, start=1):
        text, found, pair = line.partition(separator)
        if not found:
            raise DataFormatError(f"expected TEXT{separator!r}TEXT_PAIR, found no {separator!r}",
                                  "<stdin>" if source == "-" else source, number)
        texts.append(text)
        pairs.append(pair)
    return texts, pairs
