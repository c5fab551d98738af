"""DeBERTa-v2 and -v3: SentencePiece, relative (disentangled) attention, no token type embedding in v3."""

from tfft.families.base import Family

FAMILY = Family(
    name="DeBERTa-v2/v3",
    model_types=("deberta-v2",),
    tokenizer="sentencepiece",
    token_types=True,
    positions="relative",
    projections={
        "query": ("attention", "self", "query_proj"),
        "key": ("attention", "self", "key_proj"),
        "value": ("attention", "self", "value_proj"),
        "attention_output": ("attention", "dense_output", "dense"),
        "intermediate": ("intermediate", "dense"),
        "output": ("bert_output", "dense"),
    },
    checkpoints="microsoft/deberta-v3-base, microsoft/deberta-v3-small",
)
