"""What an encoder family is, answered in one place for every path that needs to know.

Each family (BERT, DistilBERT, RoBERTa, ...) is one :class:`Family`: its tokenizer kind and how
words map to subwords, whether its model takes ``token_type_ids``, its position scheme and what
that allows (packed rows, the lean inference pass, word shapes), its attention dropout's config
name, where its transformer blocks and LoRA projections live. Training, prediction, LoRA,
gradient checkpointing and the exports ask the family instead of testing ``model_type``, so a new
family is one file in this package, and the guide's table (:func:`tfft.families.family_table`)
is rendered from the same entries.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import ContextManager, Dict, Mapping, Optional, Set, Tuple

from tfft.data import TOKEN_CLASSIFICATION

TOKENIZER_KINDS: Dict[str, str] = {
    # kind -> how a word's subwords are marked, which word alignment and the in-graph twin follow
    "wordpiece": "a word's continuation subwords start with ##",
    "byte_bpe": "a word's first subword starts with Ġ (its leading space)",
    "sentencepiece": "a word's first subword starts with ▁",
}

# The projections of one transformer block a LoRA target (tfft.config.LORA_TARGETS) names.
PROJECTIONS = ("query", "key", "value", "attention_output", "intermediate", "output")

# BERT-style blocks (transformers' TF BERT, RoBERTa, ELECTRA, XLM-R share these attribute names).
BERT_PROJECTIONS: Mapping[str, Tuple[str, ...]] = {
    "query": ("attention", "self_attention", "query"),
    "key": ("attention", "self_attention", "key"),
    "value": ("attention", "self_attention", "value"),
    "attention_output": ("attention", "dense_output", "dense"),
    "intermediate": ("intermediate", "dense"),
    "output": ("bert_output", "dense"),
}

_noted: Set[Tuple[str, str]] = set()


@dataclass(frozen=True)
class Family:
    """One encoder family (see the module docstring); ``model_types`` are the ``config.model_type``
    values it answers for."""

    name: str
    model_types: Tuple[str, ...]
    tokenizer: str
    token_types: bool
    positions: str
    projections: Mapping[str, Tuple[str, ...]] = field(default_factory=lambda: dict(BERT_PROJECTIONS))
    blocks_path: Tuple[str, ...] = ("encoder", "layer")
    attention_dropout: str = "attention_probs_dropout_prob"  # the config's name for it
    # The config entries of the classification heads' dropout (token, sequence tasks); where a head reads the
    # encoder's hidden dropout (MPNet, DistilBERT's and DeBERTa's token heads), --dropout sets that one.
    head_dropout: Tuple[str, str] = ("classifier_dropout", "classifier_dropout")
    # Packed rows (tfft.training.packing) and the lean inference pass (tfft.lean_bert) run BERT's block layout
    # (embeddings, then encoder.layer's attention.self_attention, intermediate, bert_output) with the model's own
    # layers; a family with that layout says so here, one without says why not in ``layout_note``.
    packing: bool = False
    lean_pass: bool = False
    layout_note: str = ""
    # Position ids count from ``padding_idx + 1`` of the embedding layer (RoBERTa, XLM-R), not from 0.
    positions_after_padding: bool = False
    # The sequence head reads BERT's pooler (tanh dense on the first token); otherwise the classifier
    # reads the first token itself (RoBERTa's, ELECTRA's and MPNet's heads).
    pooled_sequence_head: bool = True
    checkpoints: str = ""

    def __post_init__(self):
        if not (self.packing and self.lean_pass) and not self.layout_note:
            raise ValueError(f"{self.name}: a family without packed rows or the lean pass says why in layout_note")
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"{self.name}: tokenizer kind {self.tokenizer!r} is not one of {', '.join(TOKENIZER_KINDS)}")
        if set(self.projections) != set(PROJECTIONS):
            raise ValueError(f"{self.name}: LoRA projections must name {', '.join(PROJECTIONS)}")

    def classifier_dropout(self, task: str) -> Tuple[str, ...]:
        """The config entries of the ``task`` head's dropout (what ``--dropout`` sets)."""
        return (self.head_dropout[0] if task == TOKEN_CLASSIFICATION else self.head_dropout[1],)

    @property
    def subwords(self) -> str:
        return TOKENIZER_KINDS[self.tokenizer]

    def tokenizer_options(self) -> Dict[str, object]:
        """Keyword arguments the family's fast tokenizer is loaded with. Byte-level BPE must add the
        leading space to pre-split words (a checkpoint as published, e.g. roberta-base, does not ask)."""
        return {"add_prefix_space": True} if self.tokenizer == "byte_bpe" else {}

    def uses_token_types(self, config) -> bool:
        """Whether the model takes ``token_type_ids`` and has a token type embedding to use them."""
        return self.token_types and int(getattr(config, "type_vocab_size", 0) or 0) > 0

    def model_inputs(self, config, features: Mapping) -> Dict:
        """``features`` as the model takes them: without ``token_type_ids`` where it has none."""
        if self.uses_token_types(config):
            return dict(features)
        return {name: value for name, value in features.items() if name != "token_type_ids"}

    def blocks(self, model) -> list:
        """The transformer blocks of a transformers TF model of this family, in order of their first call."""
        node = self.base_model(model)
        for name in self.blocks_path:
            node = getattr(node, name)
        return list(node)

    def base_model(self, model):
        """The encoder a transformers TF classifier wraps (``model.bert``, ``model.roberta``, ``model.electra``)."""
        return getattr(model, model.base_model_prefix)

    def position_offset(self, embeddings) -> int:
        """What the model's embedding layer (``embeddings``) adds to a token's index in its sentence to
        make its position id: 0, or ``padding_idx + 1`` where positions start past the padding id (transformers'
        TF RoBERTa and XLM-R fix ``padding_idx`` to 1 whatever ``pad_token_id`` is, so it is read from the layer)."""
        return embeddings.padding_idx + 1 if self.positions_after_padding else 0

    def embedding_projection(self, base_model):
        """The layer between the embeddings and the first block (None where the embeddings are hidden-sized)."""
        return None

    def sequence_logits(self, model, first_tokens):
        """Inference logits ``[batch, labels]`` of a sequence classifier from each row's first token ``[batch, hidden]``
        after the last block: through BERT's pooler, or the classifier's own first-token read."""
        if self.pooled_sequence_head:
            first_tokens = self.base_model(model).pooler.dense(first_tokens)
        return self.head_logits(model, first_tokens)

    def head_logits(self, model, pooled, training: bool = False):
        """Logits ``[batch, labels]`` of a sequence classifier's head on a pooled vector ``[batch, hidden]`` (the
        mean of the last layer, :mod:`tfft.pooling`): BERT's and ALBERT's dropout and classifier without the
        pooler (a layer on the first token); a head that reads the first token itself reads the vector there."""
        if self.pooled_sequence_head:
            return model.classifier(model.dropout(pooled, training=training))
        return model.classifier(pooled[:, None, :], training=training)

    def tflite_tracing(self, model) -> ContextManager[None]:
        """A context in which the model traces to ops TFLite's builtins have (a family whose transformers
        code divides integers, which TensorFlow does in float64, computes that in float32 inside it)."""
        return contextlib.nullcontext()

    def packing_refusal(self, config) -> Optional[str]:
        """Why rows of this model cannot be packed (None when they can)."""
        if not self.packing:
            return f"packed rows are built for BERT's block layout, which {self.name} lacks: {self.layout_note}"
        return _bert_layout_refusal(self.name, config)

    def lean_refusal(self, config) -> Optional[str]:
        """Why the lean inference pass (:mod:`tfft.lean_bert`) does not apply (None when it does)."""
        if not self.lean_pass:
            return f"the lean inference pass runs BERT's block layout, which {self.name} lacks: {self.layout_note}"
        return _bert_layout_refusal(self.name, config)

    def word_shapes_refusal(self, config) -> Optional[str]:
        """Why word shapes cannot be this model's token types (None when they can)."""
        if self.uses_token_types(config):
            return None
        return (f"the 'word_shapes' option needs a token type embedding to carry the shapes; a {self.name} model "
                f"has none. Use --no-word-shapes (or a cased checkpoint, which sees capitalisation itself)")


def _bert_layout_refusal(name: str, config) -> Optional[str]:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"this {name} model has {config.position_embedding_type} positions, not absolute ones"
    if getattr(config, "is_decoder", False):
        return f"this {name} model is a decoder"
    return None


def note_once(topic: str, message: str) -> None:
    """Print ``message`` (why a speed-up is off) on stderr the first time ``topic`` meets it in this process."""
    if (topic, message) not in _noted:
        _noted.add((topic, message))
        print(f"{topic}: {message}", file=sys.stderr, flush=True)
