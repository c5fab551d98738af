"""ELECTRA: BERT's block layout (and attribute names) behind an embedding projection."""

from tfft.families.base import Family

FAMILY = Family(
    name="ELECTRA",
    model_types=("electra",),
    tokenizer="wordpiece",
    token_types=True,
    positions="absolute",
    checkpoints="google/electra-base-discriminator",
)
