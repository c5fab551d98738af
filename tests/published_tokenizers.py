"""Tiny checkpoints whose tokenizers are configured as the published hub checkpoints are.

``tests/families.py`` builds each family's tokenizer with the ``tokenizers`` library the way we
assumed it looks; the checkpoints users download were made differently: transformers' own
slow->fast converters (``RobertaConverter``, ``SpmConverter`` with SentencePiece's ``nmt_nfkc``
Precompiled charsmap, ``AlbertConverter``'s quote replacements, ``BertConverter``), files laid out
as on the hub (roberta-base has no tokenizer_config.json, deberta-v3 ships only ``spm.model``),
and tokenizer.json files written by older converters (ALBERT's and T5's
``WhitespaceSplit`` + ``Metaspace`` with ``add_prefix_space``). Each builder here reproduces one
of those offline with tiny vocabularies trained on the sample data and a random-init TF encoder
(1 layer, hidden size 16, :func:`families.tiny_config`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Dict

from families import sample_texts, tiny_config

EXTRA_TEXTS = [  # characters a published vocabulary has: accents, other scripts, CJK, quotes
    "Zoë Müller café naïve résumé Zürich São Paulo", "Владимир Путин посетил Москву", "北京是中国的首都 東京タワー",
    "Ελληνικά γράμματα العربية עברית हिन्दी", "``quoted'' “curly” ‘single’ — dash", "🙂 👍 ❤️",
]


def _lines() -> list:
    return list(sample_texts()) + EXTRA_TEXTS


def _train_sentencepiece(directory: Path, name: str, **options) -> Path:
    """A SentencePiece Unigram model (``nmt_nfkc``, as SentencePiece's default) trained on the sample data."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(_lines()), encoding="utf-8")
    prefix = directory / name.rsplit(".", 1)[0]
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=400,
                                             character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
                                             **options)
    corpus.unlink()
    (directory / f"{prefix.name}.vocab").unlink()
    model = directory / name
    Path(f"{prefix}.model").rename(model)
    return model


def _wordpiece_vocab(directory: Path, lowercase: bool, specials: tuple) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(_lines(), trainers.WordPieceTrainer(vocab_size=500, special_tokens=list(specials),
                                                                      show_progress=False))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    path = directory / "vocab.txt"
    path.write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    return path


def _byte_level_files(directory: Path) -> tuple:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(_lines(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    vocab = tokenizer.get_vocab()
    vocab["<mask>"] = len(vocab)  # roberta-base's <mask> is its last id
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return directory / "vocab.json", directory / "merges.txt"


def _save_model(directory: Path, family: str, vocab_size: int, pad_token_id: int, **config) -> None:
    import transformers

    from families import SPECS
    from tfft.backend import keras

    settings = tiny_config(family, vocab_size, pad_token_id=pad_token_id)
    for key, value in config.items():
        setattr(settings, key, value)
    keras.utils.set_random_seed(0)
    model = getattr(transformers, SPECS[family].model_class)(settings)
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))


def _converted(cls_name: str, **arguments):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, cls_name)(**arguments)


def _rewrite_tokenizer_json(directory: Path, edit: Callable[[dict], None]) -> None:
    path = directory / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    edit(spec)
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def _drop(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).unlink(missing_ok=True)


def roberta_base(directory: Path) -> Path:
    """roberta-base: vocab.json + merges.txt converted by RobertaConverter (ByteLevel add_prefix_space=false,
    RobertaProcessing trim_offsets=true, ``<mask>`` lstrip), tokenizer.json, and no tokenizer_config.json."""
    vocab, merges = _byte_level_files(directory)
    tokenizer = _converted("RobertaTokenizerFast", vocab_file=str(vocab), merges_file=str(merges))
    tokenizer.save_pretrained(str(directory))
    _drop(directory, "tokenizer_config.json", "special_tokens_map.json")
    _save_model(directory, "roberta", len(tokenizer), tokenizer.pad_token_id, max_position_embeddings=514)
    return directory


def xlm_roberta_base(directory: Path) -> Path:
    """xlm-roberta-base: a SentencePiece Unigram (nmt_nfkc, no byte fallback) converted by XLMRobertaConverter."""
    model = _train_sentencepiece(directory, "sentencepiece.bpe.model")
    tokenizer = _converted("XLMRobertaTokenizerFast", vocab_file=str(model), from_slow=True)
    tokenizer.save_pretrained(str(directory))
    _save_model(directory, "xlm-roberta", len(tokenizer), tokenizer.pad_token_id, max_position_embeddings=514)
    return directory


def albert_base_v2(directory: Path) -> Path:
    """albert-base-v2: AlbertConverter's normalizer (`` and '' quotes, NFKD, accents stripped, lowercase,
    Precompiled) and the WhitespaceSplit + Metaspace(add_prefix_space) pre-tokenizer of its 2020 tokenizer.json."""
    model = _train_sentencepiece(directory, "spiece.model")
    tokenizer = _converted("AlbertTokenizerFast", vocab_file=str(model), do_lower_case=True, keep_accents=False,
                           from_slow=True)
    tokenizer.save_pretrained(str(directory))

    def published(spec: dict) -> None:
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}]}

    _rewrite_tokenizer_json(directory, published)
    _save_model(directory, "albert", len(tokenizer), tokenizer.pad_token_id)
    return directory


def deberta_v3(directory: Path) -> Path:
    """microsoft/deberta-v3-base: only ``spm.model`` and tokenizer_config.json (DebertaV2Tokenizer), converted on load."""
    _train_sentencepiece(directory, "spm.model", pad_id=0, bos_id=1, eos_id=2, unk_id=3,
                         user_defined_symbols=["[MASK]"], pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
                         unk_piece="[UNK]")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}),
                                                     encoding="utf-8")
    tokenizer = _converted("DebertaV2TokenizerFast", vocab_file=str(directory / "spm.model"))
    _save_model(directory, "deberta-v2", len(tokenizer), tokenizer.pad_token_id)
    return directory


def _bert_like(directory: Path, family: str, fast_class: str, lowercase: bool, specials: tuple, **names) -> Path:
    vocab = _wordpiece_vocab(directory, lowercase, specials)
    tokenizer = _converted(fast_class, vocab_file=str(vocab), do_lower_case=lowercase, **names)
    tokenizer.save_pretrained(str(directory))
    _save_model(directory, family, len(tokenizer), tokenizer.pad_token_id)
    return directory


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_base_cased(directory: Path) -> Path:
    """bert-base-cased / bert-base-multilingual-cased: BertConverter's BertNormalizer(lowercase=false,
    strip_accents=None, handle_chinese_chars=true), ``do_lower_case: false`` in tokenizer_config.json."""
    return _bert_like(directory, "bert", "BertTokenizerFast", False, BERT_SPECIALS)


def distilbert_base_uncased(directory: Path) -> Path:
    return _bert_like(directory, "distilbert", "DistilBertTokenizerFast", True, BERT_SPECIALS)


def electra_base(directory: Path) -> Path:
    return _bert_like(directory, "electra", "ElectraTokenizerFast", True, BERT_SPECIALS)


def mpnet_base(directory: Path) -> Path:
    """microsoft/mpnet-base: MPNetConverter (BertNormalizer lowercase, ``<s> A </s></s> B </s>``, ``<mask>`` lstrip)."""
    return _bert_like(directory, "mpnet", "MPNetTokenizerFast", True,
                      ("<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<mask>"))


PUBLISHED: Dict[str, Callable[[Path], Path]] = {
    "roberta-base": roberta_base,
    "distilroberta-base": roberta_base,  # the same tokenizer files beside a RoBERTa config
    "xlm-roberta-base": xlm_roberta_base,
    "albert-base-v2": albert_base_v2,
    "deberta-v3-base": deberta_v3,
    "bert-base-cased": bert_base_cased,
    "distilbert-base-uncased": distilbert_base_uncased,
    "electra-base-discriminator": electra_base,
    "mpnet-base": mpnet_base,
}
