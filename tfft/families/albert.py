"""ALBERT: a SentencePiece tokenizer and one set of block weights shared by every layer (layer groups)."""

from tfft.families.base import Family


class AlbertFamily(Family):
    def blocks(self, model) -> list:
        """The shared layers (one per group and inner layer): each runs several times per forward pass, so
        a LoRA adapter on it is shared too, as its weights are."""
        groups = self.base_model(model).encoder.albert_layer_groups
        return [layer for group in groups for layer in group.albert_layers]


FAMILY = AlbertFamily(
    name="ALBERT",
    model_types=("albert",),
    tokenizer="sentencepiece",
    token_types=True,
    positions="absolute",
    projections={
        "query": ("attention", "query"),
        "key": ("attention", "key"),
        "value": ("attention", "value"),
        "attention_output": ("attention", "dense"),
        "intermediate": ("ffn",),
        "output": ("ffn_output",),
    },
    head_dropout=("classifier_dropout_prob", "classifier_dropout_prob"),
    layout_note="its blocks are one shared layer group behind an embedding mapping, called its own way",
    checkpoints="albert-base-v2",
)
