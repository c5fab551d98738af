"""ELECTRA: BERT's block layout (and attribute names) behind an embedding projection."""

from typing import Tuple

from tfft.data import TOKEN_CLASSIFICATION
from tfft.families.base import Family


class ElectraFamily(Family):
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
    checkpoints="google/electra-base-discriminator",
)
