"""DistilBERT: BERT's tokenizer, no token types, its own block layout (``transformer.layer``)."""

from tfft.families.base import Family


class DistilBertFamily(Family):
    def head_logits(self, model, pooled, training: bool = False):
        """DistilBERT's head on a pooled vector: its ReLU pre-classifier, dropout and classifier."""
        return model.classifier(model.dropout(model.pre_classifier(pooled), training=training))


FAMILY = DistilBertFamily(
    name="DistilBERT",
    model_types=("distilbert",),
    tokenizer="wordpiece",
    token_types=False,
    positions="absolute",
    projections={
        "query": ("attention", "q_lin"),
        "key": ("attention", "k_lin"),
        "value": ("attention", "v_lin"),
        "attention_output": ("attention", "out_lin"),
        "intermediate": ("ffn", "lin1"),
        "output": ("ffn", "lin2"),
    },
    blocks_path=("transformer", "layer"),
    attention_dropout="attention_dropout",
    head_dropout=("dropout", "seq_classif_dropout"),
    layout_note="its embedding layer takes no position ids and its blocks (attention.q_lin, ffn.lin1) are laid out "
                "otherwise",
    checkpoints="distilbert-base-uncased, distilbert-base-cased",
)
