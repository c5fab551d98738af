"""Tiny random-initialised checkpoints of every encoder family, built offline, as a user's hub download looks.

Each builder trains its family's kind of tokenizer on the shipped sample data with the
``tokenizers`` library (WordPiece; byte-level BPE with ``Ġ``; a SentencePiece-style Unigram with
``▁``), wraps it in the family's transformers *Fast* tokenizer class, and saves it with
``save_pretrained`` beside a random-init TF encoder (1 layer, hidden size 16). Tests and benchmarks
share them: ``tests/conftest.py``'s ``family_checkpoint`` fixture builds each one once per session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
WINDOW = 64  # tokens per input (the tokenizer's model_max_length)
HIDDEN = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def sample_texts() -> Iterator[str]:
    """The sample data's sentences, as written: NER sentences rebuilt from their tokens, then the text files."""
    words: List[str] = []
    for line in (SAMPLE_DATA / "ner_train.txt").read_text(encoding="utf-8").splitlines():
        token = line.split(" ")[0] if line.strip() else ""
        if token and token != "-DOCSTART-":
            words.append(token)
        elif words:
            yield " ".join(words)
            words = []
    for name in ("ner_predict.txt", "sentiment_train.tsv", "sentiment_predict.txt", "pairs_train.tsv"):
        for line in (SAMPLE_DATA / name).read_text(encoding="utf-8").splitlines():
            yield from (part for part in line.split("\t") if part.strip())


@dataclass(frozen=True)
class Spec:
    """How one family's test checkpoint is made: its tokenizer kind and special tokens (in id order; the
    padding token's id must be the config's ``pad_token_id``), the template that wraps a sentence,
    the transformers classes and config."""

    tokenizer: str  # "wordpiece" | "byte_bpe" | "sentencepiece"
    specials: Tuple[str, ...]
    template: Tuple[str, str]  # (start, end) tokens around one sentence
    pair_middle: str  # tokens between the two sentences of a pair
    fast_class: str
    model_class: str
    config_class: str
    config: Dict = field(default_factory=dict)
    lowercase: bool = False
    names: Dict[str, str] = field(default_factory=dict)  # the fast class's special-token arguments


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BERT_NAMES = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
ROBERTA_NAMES = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                     pad_token="<pad>", mask_token="<mask>")

SPECS: Dict[str, Spec] = {
    "bert": Spec("wordpiece", BERT_SPECIALS, ("[CLS]", "[SEP]"), "[SEP]", "BertTokenizerFast", "TFBertModel",
                 "BertConfig", dict(max_position_embeddings=WINDOW), lowercase=True, names=BERT_NAMES),
    "electra": Spec("wordpiece", BERT_SPECIALS, ("[CLS]", "[SEP]"), "[SEP]", "ElectraTokenizerFast", "TFElectraModel",
                    "ElectraConfig", dict(max_position_embeddings=WINDOW), names=BERT_NAMES),
    "distilbert": Spec("wordpiece", BERT_SPECIALS, ("[CLS]", "[SEP]"), "[SEP]", "DistilBertTokenizerFast",
                       "TFDistilBertModel", "DistilBertConfig",
                       dict(max_position_embeddings=WINDOW),
                       lowercase=True, names=BERT_NAMES),
    "mpnet": Spec("wordpiece", ("<s>", "<pad>", "</s>", "[UNK]", "<mask>"), ("<s>", "</s>"), "</s> </s>",
                  "MPNetTokenizerFast", "TFMPNetModel", "MPNetConfig", dict(max_position_embeddings=WINDOW + 2),
                  lowercase=True, names=dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                             unk_token="[UNK]", pad_token="<pad>", mask_token="<mask>")),
    "roberta": Spec("byte_bpe", ROBERTA_SPECIALS, ("<s>", "</s>"), "</s> </s>", "RobertaTokenizerFast",
                    "TFRobertaModel", "RobertaConfig", dict(max_position_embeddings=WINDOW + 2, type_vocab_size=1),
                    names=ROBERTA_NAMES),
    "xlm-roberta": Spec("sentencepiece", ROBERTA_SPECIALS, ("<s>", "</s>"), "</s> </s>", "XLMRobertaTokenizerFast",
                        "TFXLMRobertaModel", "XLMRobertaConfig",
                        dict(max_position_embeddings=WINDOW + 2, type_vocab_size=1), names=ROBERTA_NAMES),
    "albert": Spec("sentencepiece", ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"), ("[CLS]", "[SEP]"), "[SEP]",
                   "AlbertTokenizerFast", "TFAlbertModel", "AlbertConfig",
                   dict(max_position_embeddings=WINDOW), lowercase=True,
                   names=dict(unk_token="<unk>", sep_token="[SEP]", pad_token="<pad>", cls_token="[CLS]",
                              mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")),
    "deberta-v2": Spec("sentencepiece", ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"), ("[CLS]", "[SEP]"), "[SEP]",
                       "DebertaV2TokenizerFast", "TFDebertaV2Model", "DebertaV2Config",
                       dict(max_position_embeddings=WINDOW, relative_attention=True, position_buckets=16,
                            pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                            norm_rel_ebd="layer_norm", share_att_key=True, max_relative_positions=-1),
                       names=dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                  mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")),
}
FAMILY_NAMES = tuple(SPECS)

# The ``tfft train`` options of the runs tests/conftest.py's ``family_run`` trains once per session on each
# family's checkpoint: NER (Keras' own step on length buckets; BERT: packed rows), sentiment with gradient
# accumulation and checkpointing (tfft's step, recomputed blocks) on a mean-pooled head (the published-style
# checkpoints of tests/test_published_checkpoints.py and tests/test_sequence_tasks_cli.py read the first token), NER with LoRA adapters (no validation).
COMMON = ["--learning-rate", "1e-2", "--no-tensorboard", "--seed", "3", "--max-validation-examples", "40"]
NER = ["--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
       "--validation", str(SAMPLE_DATA / "ner_valid.txt")]
SENTIMENT = ["--task", "sequence-classification", "--train", str(SAMPLE_DATA / "sentiment_train.tsv"),
             "--validation", str(SAMPLE_DATA / "sentiment_valid.tsv")]
RUNS: Dict[str, List[str]] = {
    "ner": [*COMMON, *NER, "--epochs", "2"],
    "sentiment": [*COMMON, *SENTIMENT, "--epochs", "8", "--patience", "8", "--batch-size", "4",
                  "--gradient-accumulation-steps", "2", "--gradient-checkpointing", "--learning-rate", "5e-3",
                  "--pooling", "mean"],
    "lora": [*COMMON, *NER[:4], "--epochs", "2", "--lora-rank", "4", "--learning-rate", "3e-2"],
}


def train_tokenizer(spec: Spec, vocab_size: int = 400):
    """A ``tokenizers.Tokenizer`` of ``spec``'s kind trained on :func:`sample_texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(spec.specials)
    if spec.tokenizer == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=spec.names["unk_token"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=spec.lowercase, strip_accents=spec.lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    elif spec.tokenizer == "byte_bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tokenizer = Tokenizer(models.Unigram())
        # As published checkpoints normalise, less their Precompiled charsmap (which needs sentencepiece to
        # build): NFKD (compatibility forms, accents apart), lowercased for uncased ones.
        steps = [normalizers.NFKD()] + ([normalizers.Lowercase()] if spec.lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                          unk_token=spec.names["unk_token"])
    tokenizer.train_from_iterator(list(sample_texts()), trainer)
    start, end = spec.template
    ids = [(token, tokenizer.token_to_id(token)) for token in dict.fromkeys([start, end, *spec.pair_middle.split()])]
    if spec.tokenizer == "byte_bpe":
        tokenizer.post_processor = processors.RobertaProcessing((end, tokenizer.token_to_id(end)),
                                                                (start, tokenizer.token_to_id(start)),
                                                                add_prefix_space=False)
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{start} $A {end}", pair=f"{start} $A {spec.pair_middle} $B:1 {end}:1", special_tokens=ids)
    return tokenizer


def tiny_config(family: str, vocab_size: int, pad_token_id: int = 0, dropout: float = 0.0):
    """``family``'s transformers config for a random-init encoder of :data:`HIDDEN`'s size (1 layer, hidden
    size 16; a benchmark sets the default model's), ELECTRA's and ALBERT's embeddings half as wide."""
    import transformers

    spec = SPECS[family]
    if family == "distilbert":  # the same sizes under DistilBERT's names
        options = dict(dim=HIDDEN["hidden_size"], n_layers=HIDDEN["num_hidden_layers"],
                       n_heads=HIDDEN["num_attention_heads"], hidden_dim=HIDDEN["intermediate_size"])
    else:
        options = dict(HIDDEN)
    if family in ("electra", "albert"):  # factorised embeddings, as published
        options["embedding_size"] = HIDDEN["hidden_size"] // 2
    options.update(spec.config)
    dropouts = (dict(dropout=dropout, attention_dropout=dropout) if family == "distilbert"
                else dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    if family == "albert":  # its classifier's dropout is a config entry of its own
        dropouts.update(classifier_dropout_prob=dropout)
    return getattr(transformers, spec.config_class)(vocab_size=vocab_size, pad_token_id=pad_token_id, **options,
                                                    **dropouts)


def write_family_checkpoint(family: str, directory: Path, dropout: float = 0.0) -> Path:
    """Save ``family``'s tiny checkpoint (tokenizer and random-init TF encoder) into ``directory``.

    A byte-level BPE tokenizer is saved as roberta-base publishes its own: no ``add_prefix_space`` in
    its tokenizer_config.json, which tfft must handle itself."""
    import transformers

    from tfft.backend import keras

    spec = SPECS[family]
    directory.mkdir(parents=True, exist_ok=True)
    fast_class = getattr(transformers, spec.fast_class)
    tokenizer = fast_class(tokenizer_object=train_tokenizer(spec), model_max_length=WINDOW,
                           do_lower_case=spec.lowercase, **spec.names)
    tokenizer.save_pretrained(str(directory))
    if spec.tokenizer == "byte_bpe":
        config_file = directory / "tokenizer_config.json"
        settings = json.loads(config_file.read_text(encoding="utf-8"))
        settings.pop("add_prefix_space", None)
        config_file.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    config = tiny_config(family, len(tokenizer), pad_token_id=tokenizer.pad_token_id, dropout=dropout)
    keras.utils.set_random_seed(0)  # the same weights in every session
    model = getattr(transformers, spec.model_class)(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    return directory
