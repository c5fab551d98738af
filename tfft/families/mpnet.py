"""MPNet: a WordPiece tokenizer, no token types, positions offset past the padding id plus a relative bias."""

from tfft.families.base import Family

FAMILY = Family(
    name="MPNet",
    model_types=("mpnet",),
    tokenizer="wordpiece",
    token_types=False,
    positions="padding-offset absolute and relative",
    projections={
        "query": ("attention", "attn", "q"),
        "key": ("attention", "attn", "k"),
        "value": ("attention", "attn", "v"),
        "attention_output": ("attention", "attn", "o"),
        "intermediate": ("intermediate", "dense"),
        "output": ("out", "dense"),
    },
    checkpoints="microsoft/mpnet-base, all-mpnet-base-v2",
)
