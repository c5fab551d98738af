"""SavedModel export for TF Serving: raw-text and token-id signatures, core TF ops only.

Layout: ``EXPORT_DIR/NAME/VERSION/`` (the directory TF Serving watches), written to a
temporary sibling and renamed into place so a serving process never sees half a model.

Signatures:

* ``serving_default`` -- input ``text`` (tf.string ``[batch]``; plus ``text_pair`` for
  pair classification). Tokenization runs in the graph with core TensorFlow ops only
  (:func:`~tfft.export.graph_tokenizers.graph_tokenizer`: WordPiece, byte-level BPE or
  SentencePiece, built from the run's tokenizer.json), so a stock model server loads it.

  Sequence classification returns ``label`` (string ``[batch]``), ``label_id`` (int32)
  and ``probabilities`` (float32 ``[batch, classes]``). Multi-label classification returns
  ``probabilities`` (float32 ``[batch, labels]``, one sigmoid each), ``predicted`` (bool
  ``[batch, labels]``: at or above the label's decision threshold, chosen on validation data and
  kept in the model card, and with ``at_least_one`` in the card the most probable label of a text
  no threshold selects), ``labels`` (string ``[batch, labels]``: the predicted labels first, in
  label order, padded with ``""``) and ``num_labels`` (int32). Regression returns ``value``
  (float32 ``[batch]``, in the training targets' units).

  Token classification returns per word -- the text's words under the run's ``word_split``
  rule (:mod:`tfft.words`: ``natural`` splits punctuation, quotes and clitics off as in CoNLL
  tokens, with the same regular expressions in the graph), each tagged from its first subword
  and the sentence decoded with constrained Viterbi (no ``I-X`` that does not continue an
  ``X``) -- padded to the longest sentence of the batch: ``tags`` (string, padding ``""``), ``tag_ids`` (int32, padding -1),
  ``tag_scores`` (float32, padding 0), ``word_start``/``word_end`` (int64 character
  offsets, padding -1), ``num_words`` (int32); and per entity: ``entity_types`` (string,
  padding ``""``), ``entity_start``/``entity_end`` (int64 character offsets, end exclusive,
  padding -1), ``entity_scores`` (float32, padding 0), ``num_entities`` (int32). Texts longer
  than the model's maximum are tagged in overlapping windows in the graph, like ``tfft
  predict``.
  Models trained with word shapes compute them in the graph (:mod:`tfft.export.graph_words`).

* ``serving_pretokenized`` (token classification) -- ``text`` already split into words,
  joined by spaces: split at whitespace only, same outputs as ``serving_default``.

* ``predict_ids`` -- ``input_ids``, ``attention_mask`` and, where the family's model takes token
  types (not DistilBERT or MPNet), ``token_type_ids`` (int32 ``[batch, length]``) to ``logits`` and ``probabilities`` (regression: ``value``), for clients
  that tokenize.

Every signature first checks the request's size against :mod:`tfft.export.request_limits` and
refuses a request over a limit (InvalidArgument) before any other op runs.

All run models of BERT's block layout (BERT, ELECTRA, RoBERTa, XLM-R) through
:func:`tfft.lean_bert.lean_logits` (same weights and function, about half the graph ops of the
transformers ``call``), which is what lets raw text in, with
tokenization in the graph, answer faster than a plain export with tokenization in Python.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from tfft.backend import tf
from tfft.export.graph_words import split_words, valid_utf8, viterbi_decode
from tfft.export.graph_tokenizers import graph_tokenizer
from tfft.export.request_limits import checked_ids, checked_texts, request_limits
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, TOKEN_CLASSIFICATION
from tfft.config import EXPORT_PRECISIONS
from tfft.errors import ConfigError
from tfft.families import family_of
from tfft.features import inference_length
from tfft.heads import TARGET_SCALE, at_least_one_of, logits_to_outputs, thresholds_of
from tfft.lean_bert import inference_logits
from tfft.lora import merge_adapters
from tfft.run_dir import METRICS_FILE, MODEL_SUBDIR, load_run, load_run_config
from tfft.words import NATURAL, WHITESPACE
from tfft.files import atomic_directory
from tfft.ownership import EXPORT, checked_name, checked_version, mark

MODEL_CARD = "model_card.json"
# Token classification: text already split into words with spaces (no word rule; ``predict --input-format tokens``).
PRETOKENIZED_SIGNATURE = "serving_pretokenized"


class ServingModule(tf.Module):
    """A trained classifier plus the in-graph tokenizer and label decoding it serves with."""

    def __init__(self, model, tokenizer, task: str, labels: Sequence[str], max_length: int,
                 assets: Dict[str, str], with_pairs: bool = False, word_shapes: bool = False, stride: int = 32,
                 word_split: str = NATURAL):
        super().__init__(name="tfft_serving")
        self.word_split = word_split
        self.stride = int(stride)
        self.model = model
        self.labels = list(labels)
        self.word_shapes = word_shapes
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = int(max_length)
        self.with_pairs = with_pairs
        self.label_names = tf.constant(list(labels))
        self.thresholds = tf.constant(thresholds_of(model.config, len(self.labels)), tf.float32)
        self.at_least_one = at_least_one_of(model.config)
        # Assets are copied into the SavedModel's assets/ directory and tracked by path.
        self.asset_files = {name: tf.saved_model.Asset(path) for name, path in assets.items()}
        prefixes, types, type_names = _label_structure(labels)
        self.label_prefix = tf.constant(prefixes, tf.int32)  # 0 = O, 1 = B, 2 = I
        self.label_type = tf.constant(types, tf.int32)  # index into type_names, -1 for O
        self.type_names = tf.constant(type_names or [""])

    def probabilities(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
        """The model's outputs (:func:`tfft.heads.logits_to_outputs`): probabilities, or regression values."""
        return logits_to_outputs(self.model.config, inference_logits(self.model, features))

    def predict_ids(self, input_ids, attention_mask, token_type_ids=None):
        """Logits and outputs of client-tokenized rows; ``token_type_ids`` only for a model that has token types."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 **({} if token_type_ids is None else {"token_type_ids": token_type_ids})}
        checked = checked_ids(tuple(given.values()),
                              getattr(self.model.config, "max_position_embeddings", self.max_length))
        features = dict(zip(given, checked))
        logits = tf.cast(inference_logits(self.model, features), tf.float32)
        outputs = logits_to_outputs(self.model.config, logits)
        if self.task == REGRESSION:
            return {"logits": logits, "value": outputs[:, 0]}
        return {"logits": logits, "probabilities": outputs}

    def classify(self, text, text_pair=None):
        if text_pair is None:
            text, = checked_texts(text)
        else:
            text, text_pair = checked_texts(text, text_pair)
        token_ids, _, _, _ = self.tokenizer.tokenize(text)
        pair_ids = None if text_pair is None else self.tokenizer.tokenize(text_pair)[0]
        outputs = self.probabilities(self.tokenizer.pack(token_ids, self.max_length, pair_ids))
        if self.task == REGRESSION:
            return {"value": outputs[:, 0]}
        if self.task == MULTI_LABEL_CLASSIFICATION:
            predicted = outputs >= self.thresholds
            if self.at_least_one:  # a text no threshold selects takes its most probable label
                top = tf.one_hot(tf.argmax(outputs, axis=-1), len(self.labels), on_value=True, off_value=False)
                predicted |= top & ~tf.reduce_any(predicted, axis=-1, keepdims=True)
            # Predicted labels first (a stable sort keeps label order), then "" for the rest.
            order = tf.argsort(tf.cast(~predicted, tf.int32), axis=-1, stable=True)
            chosen = tf.gather(predicted, order, batch_dims=1)
            return {"probabilities": outputs, "predicted": predicted,
                    "labels": tf.where(chosen, tf.gather(self.label_names, order), ""),
                    "num_labels": tf.reduce_sum(tf.cast(predicted, tf.int32), axis=-1)}
        label_id = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        return {"label": tf.gather(self.label_names, label_id), "label_id": label_id, "probabilities": outputs}

    def tag(self, text, word_split: str):
        """Tag each word (``word_split``) from its first subword, decode with constrained Viterbi.

        The tokenizer reads the words joined by single spaces, as ``tfft predict`` encodes them, so
        no subword crosses a word boundary (``did`` ``n't``). Texts longer than the model's
        maximum are cut into overlapping windows in the graph, exactly as
        ``tfft.features.encode_for_inference`` cuts them (``stride`` tokens shared), and each word
        takes the window where its first subword has the most context (the earlier one on a tie),
        as ``tfft.inference.word_probabilities`` does.
        """
        text, = checked_texts(text)
        text = valid_utf8(text)
        words = split_words(text, word_split)
        batch = tf.shape(text, out_type=tf.int64)[0]
        joined, joined_start = _join_words(text, words)
        token_ids, token_piece, _, piece_end = self.tokenizer.tokenize(joined)
        far = tf.int64.max
        column = tf.fill([batch, 1], far)
        # The word of each pre-tokenizer piece (pieces never cross the spaces between words), then of each token:
        # the word holding the piece's last character (a SentencePiece "▁word" piece starts on the space before it).
        word_of_piece = tf.searchsorted(tf.concat([joined_start.to_tensor(far), column], 1),
                                        tf.concat([(piece_end - 1).to_tensor(far), column], 1), side="right",
                                        out_type=tf.int64) - 1
        # A piece that ends on a space between words is no word's: tfft predict encodes each word on its own,
        # so the lone space a byte-level BPE makes a token before an added token ("] <s>") is not in its rows.
        joined_end = joined_start + (words.end - words.start)
        in_word = (piece_end - 1).to_tensor(far) < tf.gather(tf.concat([joined_end.to_tensor(-1), column], 1),
                                                              tf.maximum(word_of_piece[:, :-1], 0), batch_dims=1)
        kept = tf.gather_nd(in_word & (word_of_piece[:, :-1] >= 0),
                            tf.stack([token_ids.value_rowids(), token_piece.flat_values], 1))
        # Rebuilt without validation: tf.ragged.boolean_mask adds Assert ops of its own, which the graph would
        # run before the request's size checks have passed.
        kept_per_row = tf.math.unsorted_segment_sum(tf.cast(kept, tf.int64), token_ids.value_rowids(), batch)
        token_ids, token_piece = (tf.RaggedTensor.from_row_lengths(tf.boolean_mask(t.flat_values, kept), kept_per_row,
                                                                   validate=False)
                                  for t in (token_ids, token_piece))
        token_row = token_ids.value_rowids()
        token_word = tf.gather_nd(word_of_piece, tf.stack([token_row, token_piece.flat_values], 1))  # within its row
        token = tf.range(tf.size(token_row, out_type=tf.int64))
        first_in_row = token == tf.gather(token_ids.row_starts(), token_row)
        is_first = first_in_row | (token_word != tf.gather(token_word, tf.maximum(token - 1, 0)))

        # Windows of at most `span` tokens, `step` apart: HF's overflowing windows with this stride.
        span = tf.constant(self.max_length - 2, tf.int64)
        step = tf.constant(self.max_length - 2 - self.stride, tf.int64)
        length = token_ids.row_lengths()
        windows_per_row = 1 + tf.maximum(tf.constant(0, tf.int64), (length - span + step - 1) // step)
        window_row = tf.repeat(tf.range(batch), windows_per_row)
        window = tf.range(tf.size(window_row, out_type=tf.int64))
        window_start = (window - tf.gather(tf.cumsum(windows_per_row, exclusive=True), window_row)) * step
        window_length = tf.minimum(span, tf.gather(length, window_row) - window_start)
        # Every (window, position) occurrence of a token, flat.
        occurrence = tf.range(tf.reduce_sum(window_length))
        occurrence_window = tf.searchsorted(tf.cumsum(window_length), occurrence, side="right", out_type=tf.int64)
        position = occurrence - tf.gather(tf.cumsum(window_length, exclusive=True), occurrence_window)
        occurrence_token = (tf.gather(token_ids.row_starts(), tf.gather(window_row, occurrence_window))
                            + tf.gather(window_start, occurrence_window) + position)
        features = self.tokenizer.pack(tf.RaggedTensor.from_row_lengths(
            tf.gather(token_ids.flat_values, occurrence_token), window_length, validate=False), self.max_length)
        at = tf.stack([occurrence_window, position + 1], 1)  # in the packed rows, after [CLS]
        occurrence_row = tf.gather(window_row, occurrence_window)
        occurrence_word = tf.gather(words.start.row_starts(), occurrence_row) + tf.gather(token_word, occurrence_token)
        if self.word_shapes:
            shape_type = 1 + tf.cast(tf.gather(words.shape.flat_values, occurrence_word), tf.int64)
            features["token_type_ids"] = tf.scatter_nd(
                at, shape_type, tf.shape(features["input_ids"], out_type=tf.int64))
        probabilities = tf.gather_nd(self.probabilities(features), at)  # [occurrences, labels]

        # Per word, the occurrence of its first subword with the most context, the earliest window on a tie.
        num_windows = tf.size(window, out_type=tf.int64)
        context = tf.minimum(position + 1, tf.gather(window_length, occurrence_window) - position)
        rank = context * (num_windows + 1) + (num_windows - occurrence_window)
        all_words = tf.size(words.start.flat_values, out_type=tf.int64)
        segment = tf.where(tf.gather(is_first, occurrence_token), occurrence_word, all_words)
        best = tf.math.unsorted_segment_max(rank, segment, all_words + 1)
        chosen = tf.where((segment < all_words) & tf.equal(rank, tf.gather(best, segment)))[:, 0]
        num_labels = tf.shape(probabilities, out_type=tf.int64)[1]
        # Words without any token (e.g. only control characters) keep a uniform row, as in tfft.inference.
        flat_probabilities = tf.tensor_scatter_nd_update(
            tf.fill(tf.stack([all_words, num_labels]), 1.0 / tf.cast(num_labels, tf.float32)),
            tf.gather(segment, chosen)[:, None], tf.gather(probabilities, chosen))
        word_probabilities = words.start.with_flat_values(flat_probabilities).to_tensor()
        num_words = tf.cast(words.start.row_lengths(), tf.int32)
        most_words = tf.shape(word_probabilities)[1]
        valid = tf.range(most_words)[None] < num_words[:, None]
        tag_ids = tf.where(valid, viterbi_decode(word_probabilities, valid, self.labels), -1)
        tag_scores = tf.where(valid, tf.gather(word_probabilities, tf.maximum(tag_ids, 0), batch_dims=2), 0.0)
        starts = words.start.to_tensor(default_value=-1)
        ends = words.end.to_tensor(default_value=-1)
        return {
            "tags": tf.where(valid, tf.gather(self.label_names, tf.maximum(tag_ids, 0)), ""),
            "tag_ids": tag_ids,
            "tag_scores": tag_scores,
            "word_start": starts,
            "word_end": ends,
            "num_words": num_words,
            **self._decode_entities(tag_ids, tag_scores, starts, ends),
        }

    def _decode_entities(self, tag_ids, tag_scores, starts, ends):
        """IOB2 spans, lenient like conlleval: an I-X that does not continue an X entity starts one.

        Inputs are dense ``[batch, words]`` with tag id -1 on padding.
        """
        prefix = tf.gather(self.label_prefix, tf.maximum(tag_ids, 0)) * tf.cast(tag_ids >= 0, tf.int32)
        entity_type = tf.where(tag_ids >= 0, tf.gather(self.label_type, tf.maximum(tag_ids, 0)), -1)
        batch, width = tf.shape(prefix)[0], tf.shape(prefix)[1]
        inside = prefix > 0
        previous_inside = tf.pad(inside[:, :-1], [[0, 0], [1, 0]])
        previous_type = tf.pad(entity_type[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
        continues = (prefix == 2) & previous_inside & tf.equal(previous_type, entity_type)
        begins = inside & ~continues
        index = tf.cumsum(tf.cast(begins, tf.int32), axis=1) - 1  # entity number within the row
        segment = tf.where(inside, tf.range(batch)[:, None] * width + index, batch * width)
        word = tf.broadcast_to(tf.range(width)[None], [batch, width])
        segments = batch * width + 1
        first_word = tf.math.unsorted_segment_min(word, segment, segments)[:-1]
        last_word = tf.math.unsorted_segment_max(word, segment, segments)[:-1]
        mean_score = tf.math.unsorted_segment_mean(tag_scores, segment, segments)[:-1]
        count = tf.reduce_sum(tf.cast(begins, tf.int32), axis=1)
        most = tf.reduce_max(tf.concat([count, [0]], 0))
        valid = tf.range(most)[None] < count[:, None]

        def per_entity(values, padding):
            values = tf.reshape(values, [batch, width])[:, :most]
            return tf.where(valid, values, padding)

        first = per_entity(first_word, 0)
        last = per_entity(last_word, 0)
        types = tf.gather(entity_type, first, batch_dims=1)
        return {
            "entity_types": tf.where(valid, tf.gather(self.type_names, tf.maximum(types, 0)), ""),
            "entity_start": tf.where(valid, tf.gather(starts, first, batch_dims=1), tf.constant(-1, tf.int64)),
            "entity_end": tf.where(valid, tf.gather(ends, last, batch_dims=1), tf.constant(-1, tf.int64)),
            "entity_scores": per_entity(mean_score, 0.0),
            "num_entities": count,
        }

    def signatures(self) -> dict:
        """Concrete functions for ``serving_default`` and ``predict_ids``."""
        text = tf.TensorSpec([None], tf.string, name="text")
        signatures = {}
        if self.task == TOKEN_CLASSIFICATION:
            serve = tf.function(lambda text: self.tag(text, self.word_split), input_signature=[text])
            self.serve_pretokenized = tf.function(lambda text: self.tag(text, WHITESPACE), input_signature=[text])
            signatures[PRETOKENIZED_SIGNATURE] = self.serve_pretokenized.get_concrete_function()
        elif self.with_pairs:
            serve = tf.function(self.classify, input_signature=[text, tf.TensorSpec([None], tf.string, name="text_pair")])
        else:
            serve = tf.function(lambda text: self.classify(text), input_signature=[text])
        # predict_ids declares token_type_ids only where the family's model takes them (not DistilBERT, MPNet).
        id_names = ("input_ids", "attention_mask") + (
            ("token_type_ids",) if family_of(self.model.config).uses_token_types(self.model.config) else ())
        ids = [tf.TensorSpec([None, None], tf.int32, name=n) for n in id_names]
        self.serve = serve
        self.serve_ids = tf.function(self.predict_ids, input_signature=ids)
        return {"serving_default": serve.get_concrete_function(), "predict_ids": self.serve_ids.get_concrete_function(),
                **signatures}


def _join_words(text: tf.Tensor, words) -> tuple:
    """Each row's words joined by single spaces, and where each word starts in it (``[batch, (words)]``).

    Built from the text's code points, each copied once: cutting every word out of its whole row
    (``substr`` of the row gathered per word) would copy the text once per word.
    """
    chars = tf.strings.unicode_decode(text, "UTF-8")
    length = words.end.flat_values - words.start.flat_values
    # Every word's characters, then a space; the space after a row's last word is cut off below.
    word_of = tf.repeat(tf.range(tf.size(length, out_type=tf.int64)), length + 1)
    word_first = tf.cumsum(length + 1, exclusive=True)
    rank = tf.range(tf.size(word_of, out_type=tf.int64)) - tf.gather(word_first, word_of)
    in_word = rank < tf.gather(length, word_of)
    source = (tf.gather(chars.row_starts(), tf.gather(words.start.value_rowids(), word_of))
              + tf.gather(words.start.flat_values, word_of) + rank)
    code_points = tf.where(in_word, tf.gather(chars.flat_values, tf.where(in_word, source, 0)), ord(" "))
    spaced = tf.strings.unicode_encode(tf.RaggedTensor.from_row_lengths(
        code_points, tf.reduce_sum(words.start.with_flat_values(length + 1), axis=1), validate=False), "UTF-8")
    kept = tf.strings.length(spaced) - tf.cast(words.start.row_lengths() > 0, tf.int32)
    joined = tf.strings.substr(spaced, tf.zeros_like(kept), kept)
    row_first = tf.gather(tf.concat([word_first, [0]], 0), words.start.row_starts())
    return joined, words.start.with_flat_values(word_first - tf.gather(row_first, words.start.value_rowids()))


def _label_structure(labels: Sequence[str]):
    """Per label: IOB prefix code and entity-type index; and the entity type names."""
    type_names: List[str] = []
    prefixes, types = [], []
    for label in labels:
        head, _, entity_type = label.partition("-")
        if label == "O" or head not in ("B", "I") or not entity_type:
            prefixes.append(0)
            types.append(-1)
            continue
        if entity_type not in type_names:
            type_names.append(entity_type)
        prefixes.append(1 if head == "B" else 2)
        types.append(type_names.index(entity_type))
    return prefixes, types, type_names


def next_version(model_dir: Path) -> int:
    """1 + the highest version directory under ``model_dir`` (1 when there is none).

    Only names of ASCII digits are versions, as for TF Serving: ``str.isdigit`` also takes
    ``²`` or ``١``, which are no version numbers."""
    versions = ([int(p.name) for p in model_dir.iterdir() if p.name.isascii() and p.name.isdigit()]
                if model_dir.is_dir() else [])
    return checked_version(max(versions, default=0) + 1, f"the next free version under {model_dir}")


def export_run(run_dir: Union[str, Path], name: str, version: Optional[int] = None,
               export_dir: Union[str, Path] = "saved_models", precision: str = "fp32") -> Path:
    """Export a ``tfft train`` run as ``export_dir/name/version`` and return that path.

    ``precision`` ``bf16`` computes the encoder in bfloat16 (float32 weights, layer norms and
    softmax outputs), for CPUs with AVX512-BF16 or AMX: measured on an AVX512-BF16 CPU without
    AMX, more sentences per second in batches, slower for a single sentence (docs/results.md).
    """
    from tfft.models import label_map_of

    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(EXPORT_PRECISIONS)} for an export; got {precision!r}")
    target_parent = Path(export_dir) / checked_name(name, "--name")
    version = checked_version(version) if version is not None else next_version(target_parent)
    target = target_parent / str(version)
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another --version or omit it for the next free one")
    model_dir = Path(run_dir) / MODEL_SUBDIR
    load_run_config(run_dir)  # a clear error for a directory that is not a run, before the checks below
    try:
        in_graph_tokenizer = graph_tokenizer(model_dir, _backend_json(model_dir))
    except (ValueError, OSError) as error:
        raise ConfigError(f"{run_dir}: tfft export runs the tokenizer in the serving graph, and this run's tokenizer "
                          f"has no graph twin: {error}") from None
    # The export's precision, whatever the training's: float32 runs on any server.
    config, model, tokenizer = load_run(run_dir, precision=precision)
    merge_adapters(model)  # a LoRA run serves as a plain model: adapters folded into the kernels
    labels = list(label_map_of(model).labels)
    card = {**model_card(run_dir, config, tokenizer, labels, name, model.config), "version": version, "precision": precision,
            "served_context": "sentence" if config.task == TOKEN_CLASSIFICATION else None,
            "request_limits": request_limits(),
            "signatures": {"serving_default": "raw text in", "predict_ids": "token ids in",
                           **({PRETOKENIZED_SIGNATURE: "words joined by spaces in"}
                              if config.task == TOKEN_CLASSIFICATION else {})}}
    target_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_parent, prefix=f".{version}.assets-") as scratch:
        card_path = Path(scratch) / MODEL_CARD
        card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
        labels_path = Path(scratch) / "labels.json"
        labels_path.write_text(json.dumps({str(i): label for i, label in enumerate(labels)}), encoding="utf-8")
        module = ServingModule(
            model, in_graph_tokenizer, config.task, labels, card["max_length"],
            assets={**_tokenizer_assets(model_dir), "model_card": str(card_path), "labels": str(labels_path)},
            with_pairs=bool(config.text_pair_column), word_shapes=config.uses_word_shapes, stride=config.stride,
            word_split=config.word_split,
        )
        try:
            with atomic_directory(target, replace=False) as staging:
                tf.saved_model.save(module, str(staging), signatures=module.signatures())
                mark(staging, EXPORT)
        except FileExistsError:  # another export took this version number meanwhile
            raise ConfigError(f"{target} was created by another export while this one ran; run it again") from None
    return target


def _backend_json(model_dir: Path) -> Optional[str]:
    """The pipeline the run's fast tokenizer really runs (transformers may adjust tokenizer.json from
    tokenizer_config.json, e.g. RoBERTa's add_prefix_space); None when it does not load (load_run says why)."""
    from tfft.errors import ModelLoadError
    from tfft.models import load_tokenizer

    try:
        return load_tokenizer(str(model_dir)).backend_tokenizer.to_str()
    except ModelLoadError:
        return None


def _tokenizer_assets(model_dir: Path) -> Dict[str, str]:
    """The tokenizer files a SavedModel carries for clients: the vocabulary and/or tokenizer.json."""
    files = {"vocab": model_dir / "vocab.txt", "tokenizer": model_dir / "tokenizer.json"}
    return {name: str(path) for name, path in files.items() if path.is_file()}


def context_warning(config) -> Optional[str]:
    """What a SavedModel of a ``--context-window`` run does not serve: each request's texts are tagged alone."""
    if config.task != TOKEN_CLASSIFICATION or not config.context_window:
        return None
    return (f"the run was trained with --context-window {config.context_window} (each sentence with its document "
            "neighbours as context), but the SavedModel tags every text alone, as `tfft predict` does without "
            "--context document; expect the F1 of sentences seen alone (`tfft predict RUN --context document` or "
            "a TFLite export serve document context)")


def model_card(run_dir: Union[str, Path], config, tokenizer, labels: Sequence[str], name: str,
               model_config) -> Dict[str, object]:
    """What every export records about the model it holds (the SavedModel's and the TFLite assets' card),
    ``model_config`` being the model's (a multi-label model's thresholds, a regression model's target scale)."""
    metrics_path = Path(run_dir) / METRICS_FILE
    head = {}
    if config.task == MULTI_LABEL_CLASSIFICATION:
        head["thresholds"] = dict(zip(labels, thresholds_of(model_config, len(labels))))
        head["at_least_one"] = at_least_one_of(model_config)
    if config.task == REGRESSION:
        head["target_scale"] = dict(zip(("mean", "std"), getattr(model_config, TARGET_SCALE)))
    return {
        "name": name, "task": config.task, "labels": list(labels), **head,
        "base_model": config.model, "lora_rank": config.lora_rank,
        "max_length": inference_length(tokenizer, config.task, config.max_length),
        "word_split": config.word_split, "word_shapes": config.uses_word_shapes,
        "context_window": config.context_window if config.task == TOKEN_CLASSIFICATION else 0,
        "training_metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "tfft_version": _tfft_version(), "tensorflow_version": tf.__version__, "python_version": platform.python_version(),
    }


def _tfft_version() -> str:
    from tfft import __version__

    return __version__
