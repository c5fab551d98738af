"""ELECTRA: BERT's block layout (and attribute names) behind an embedding projection, a classification head
that reads the first token itself."""

from typing import Tuple

from tfft.data import TOKEN_CLASSIFICATION
from tfft.families.base import Family


class ElectraFamily(Family):
    def embedding_projection(self, base_model):
        """``embeddings_project``: ELECTRA's embeddings may be narrower than its blocks (``embedding_size``)."""
        return getattr(base_model, "embeddings_project", None)

    def classifier_dropout(self, task: str) -> Tuple[str, ...]:
        """transformers 4.54's TF ELECTRA sequence head reads its dropout from a misspelt config entry
        whenever ``classifier_dropout`` is set (and fails without it): both are set."""
        if task == TOKEN_CLASSIFICATION:
            return ("classifier_dropout",)
        return ("classifier_dropout", "classifhidden_dropout_probier_dropout")


FAMILY = ElectraFamily(
    name="ELECTRA",
    model_types=("electra",),
    tokenizer="wordpiece",
    token_types=True,
    positions="absolute",
    packing=True,
    lean_pass=True,
    pooled_sequence_head=False,
    checkpoints="google/electra-base-discriminator",
)
