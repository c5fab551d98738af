"""BERT (cased, uncased, multilingual) and MiniLM, the default model: the family every speed-up was built on."""

from tfft.families.base import Family

FAMILY = Family(
    name="BERT",
    model_types=("bert",),
    tokenizer="wordpiece",
    token_types=True,
    positions="absolute",
    packing=True,
    lean_pass=True,
    checkpoints="bert-base-cased, bert-base-multilingual-cased, all-MiniLM-L6-v2 (the default)",
)
