"""In-graph twins of Hugging Face fast tokenizers, chosen from the run's ``tokenizer.json``.

:func:`graph_tokenizer` is the one entry point: it reads the tokenizer pipeline the run
saved and returns the tokenizer that runs it with core TensorFlow ops, every kind with the
interface of :class:`~tfft.export.tokenizer.InGraphBertTokenizer` (``tokenize`` returning
``(token_ids, token_word_index, word_start, word_end)`` and ``pack``):

* WordPiece (BERT, MiniLM, ELECTRA, DistilBERT ...): :class:`~tfft.export.tokenizer.InGraphBertTokenizer`;
* byte-level BPE (RoBERTa, GPT-2 style): :class:`.bpe.ByteLevelBpeTokenizer`;
* SentencePiece with ``▁``, Unigram or BPE (XLM-R, ALBERT, DeBERTa-v2/v3):
  :class:`.sentencepiece.SentencePieceTokenizer`.

A component none of them implements is refused with a ``ValueError`` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from tfft.export.graph_tokenizers.bpe import ByteLevelBpeTokenizer
from tfft.export.graph_tokenizers.sentencepiece import SentencePieceTokenizer

__all__ = ["ByteLevelBpeTokenizer", "SentencePieceTokenizer", "graph_tokenizer"]

TOKENIZER_FILE = "tokenizer.json"


def _pre_tokenizer_types(spec: dict) -> list:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return [p.get("type") for p in parts]


def _as_tokenizers_reads_it(text: str) -> str:
    """tokenizer.json as ``tokenizers`` holds it: its JSON parser may read a Unigram score one bit away
    from Python's, which changes how ties between segmentations break; its own serialisation is exact."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with transformers
        return text
    try:
        return Tokenizer.from_str(text).to_str()
    except Exception:  # noqa: BLE001 - a file tokenizers rejects is refused below with its component named
        return text


def graph_tokenizer(model_dir: Union[str, Path], backend_json: Optional[str] = None):
    """The in-graph tokenizer of the checkpoint in ``model_dir``.

    ``backend_json`` is the pipeline the run's tokenizer really uses
    (``tokenizer.backend_tokenizer.to_str()``: transformers may rebuild parts of tokenizer.json
    from tokenizer_config.json, e.g. RoBERTa's ``add_prefix_space``); by default the
    directory's tokenizer.json, and a BERT ``vocab.txt`` when there is none.
    """
    from tfft.export.tokenizer import InGraphBertTokenizer  # which itself uses this package's common pieces

    model_dir = Path(model_dir)
    if backend_json is None:
        path = model_dir / TOKENIZER_FILE
        if not path.is_file():
            return InGraphBertTokenizer.from_pretrained_dir(model_dir)
        backend_json = _as_tokenizers_reads_it(path.read_text(encoding="utf-8"))
    spec = json.loads(backend_json)
    model = (spec.get("model") or {}).get("type")
    pre = _pre_tokenizer_types(spec)
    if model == "WordPiece":
        return InGraphBertTokenizer.from_pretrained_dir(model_dir)
    try:
        if model == "BPE" and pre == ["ByteLevel"]:
            return ByteLevelBpeTokenizer(spec)
        if model in ("Unigram", "BPE") and pre in (["Metaspace"], ["WhitespaceSplit", "Metaspace"]):
            return SentencePieceTokenizer(spec)
    except ValueError as error:  # a component the graph does not run, named
        raise ValueError(f"tokenizer.json: {error}") from None
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"tokenizer.json: a malformed {model} pipeline ({type(error).__name__}: {error})") from None
    raise ValueError(f"tokenizer.json: a {model} model with pre-tokenizer {' + '.join(map(str, pre)) or 'none'} "
                     "has no in-graph twin (supported: WordPiece, byte-level BPE, SentencePiece Unigram/BPE "
                     "with Metaspace, alone or after WhitespaceSplit)")
