"""RoBERTa (byte-level BPE) and XLM-RoBERTa (SentencePiece): the same model code, BERT's block layout,
positions counted from past the padding id (packed rows and the lean pass offset theirs the same way), and
a classification head that reads the first token itself."""

from tfft.families.base import Family

ROBERTA = Family(
    name="RoBERTa",
    model_types=("roberta",),
    tokenizer="byte_bpe",
    token_types=True,
    positions="padding-offset absolute",
    packing=True,
    lean_pass=True,
    positions_after_padding=True,
    pooled_sequence_head=False,
    checkpoints="roberta-base, distilroberta-base",
)

XLM_ROBERTA = Family(
    name="XLM-RoBERTa",
    model_types=("xlm-roberta",),
    tokenizer="sentencepiece",
    token_types=True,
    positions="padding-offset absolute",
    packing=True,
    lean_pass=True,
    positions_after_padding=True,
    pooled_sequence_head=False,
    checkpoints="xlm-roberta-base",
)
