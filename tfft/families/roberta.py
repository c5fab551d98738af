"""RoBERTa (byte-level BPE) and XLM-RoBERTa (SentencePiece): the same model code, BERT's block layout,
positions counted from past the padding id."""

from tfft.families.base import Family

ROBERTA = Family(
    name="RoBERTa",
    model_types=("roberta",),
    tokenizer="byte_bpe",
    token_types=True,
    positions="padding-offset absolute",
    checkpoints="roberta-base, distilroberta-base",
)

XLM_ROBERTA = Family(
    name="XLM-RoBERTa",
    model_types=("xlm-roberta",),
    tokenizer="sentencepiece",
    token_types=True,
    positions="padding-offset absolute",
    checkpoints="xlm-roberta-base",
)
