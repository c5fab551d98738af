"""Entity tagging schemes, and their normalisation to IOB2.

Models are trained on IOB2 only (every entity starts with ``B-``), so one label set and
one span decoder serve every input file, whatever scheme it was written in:

* IOB2: ``B-X`` starts every entity, ``I-X`` continues it.
* IOB1: ``I-X`` starts an entity; ``B-X`` only separates two adjacent entities of type X.
* BIOES (also IOBES, and BILOU whose ``L-``/``U-`` mean ``E-``/``S-``): ``S-X`` is a
  one-token entity and ``E-X`` ends a longer one.

One rule converts all of them: ``B-``/``S-`` start an entity, ``I-``/``E-`` continue the
entity before them when it has the same type and has not ended, and start one otherwise.
The declared scheme is therefore used to *check* the tags (an IOB1 file read as IOB2 is
flagged rather than silently accepted), not to choose a conversion.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from tfft.errors import ConfigError, DataFormatError

SCHEMES = ("IOB1", "IOB2", "BIOES")
_SCHEME_ALIASES = {"IOBES": "BIOES", "BILOU": "BIOES"}
_PREFIXES = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}

Span = Tuple[str, int, int]


class TagError(DataFormatError):
    """A tag problem found where the tag's file and line are unknown.

    ``sequence`` (which tag sequence) and ``index`` (which tag in it) let a reader that
    knows where each sequence came from re-raise the error at the right file and line.
    """

    def __init__(self, message: str, sequence: Optional[int] = None, index: Optional[int] = None):
        super().__init__(message)
        self.sequence = sequence
        self.index = index


def split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """Return ``(prefix, type)`` of a tag: ``("O", None)`` or a prefix among B, I, E, S.

    ``L-`` and ``U-`` are returned as ``E`` and ``S``. Anything that is not ``O`` or
    ``PREFIX-TYPE`` raises TagError; the type is everything after the first hyphen.
    """
    if tag == "O":
        return "O", None
    prefix, hyphen, entity_type = tag.partition("-")
    if hyphen and entity_type and prefix in _PREFIXES and not any(c.isspace() for c in entity_type):
        return _PREFIXES[prefix], entity_type
    raise TagError(
        f"malformed tag {tag!r}: expected 'O' or PREFIX-TYPE with PREFIX one of B, I, E, S "
        "(or L, U), e.g. 'B-PER'"
    )


def _parse(tags: Sequence[str], sequence: Optional[int]) -> List[Tuple[str, Optional[str]]]:
    parsed = []
    for index, tag in enumerate(tags):
        try:
            parsed.append(split_tag(tag))
        except TagError as error:
            raise TagError(error.reason, sequence, index) from None
    return parsed


def _continues(previous: Tuple[str, Optional[str]], entity_type: Optional[str]) -> bool:
    """Whether a token of ``entity_type`` can extend the entity the previous tag is in."""
    return previous[0] in ("B", "I") and previous[1] == entity_type


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Guess the scheme of a corpus: "BIOES", "IOB1" or "IOB2".

    Any ``E-``/``S-`` (or ``L-``/``U-``) tag means BIOES; otherwise an ``I-X`` that starts
    an entity (at the start of a sentence, after ``O`` or after another type) means
    IOB1; otherwise IOB2. Detection runs over the whole corpus because a single
    sentence often has no entity that tells the schemes apart.
    """
    iob1 = False
    for sequence, tags in enumerate(tag_sequences):
        previous: Tuple[str, Optional[str]] = ("O", None)
        for prefix, entity_type in _parse(tags, sequence):
            if prefix in ("E", "S"):
                return "BIOES"
            if prefix == "I" and not _continues(previous, entity_type):
                iob1 = True
            previous = (prefix, entity_type)
    return "IOB1" if iob1 else "IOB2"


def resolve_scheme(scheme: str, tag_sequences: Iterable[Sequence[str]]) -> str:
    """Return the canonical scheme name, detecting it over ``tag_sequences`` for "auto"."""
    if scheme == "auto":
        return detect_scheme(tag_sequences)
    canonical = _SCHEME_ALIASES.get(scheme, scheme)
    if canonical not in SCHEMES:
        raise ConfigError(f"unknown tagging scheme {scheme!r}; expected 'auto', {', '.join(map(repr, SCHEMES))}")
    return canonical


def _to_iob2(tags: Sequence[str], scheme: str, sequence: Optional[int]) -> List[str]:
    converted = []
    previous: Tuple[str, Optional[str]] = ("O", None)
    for index, (prefix, entity_type) in enumerate(_parse(tags, sequence)):
        if prefix in ("E", "S") and scheme != "BIOES":
            raise TagError(
                f"tag {tags[index]!r} is a BIOES tag, which {scheme} does not have; "
                "use scheme 'BIOES' or 'auto'",
                sequence,
                index,
            )
        if prefix == "O":
            converted.append("O")
        elif prefix in ("I", "E") and _continues(previous, entity_type):
            converted.append(f"I-{entity_type}")
        else:
            if prefix == "I" and scheme == "IOB2":
                where = f"after {tags[index - 1]!r}" if index else "at the start of the sentence"
                raise TagError(
                    f"tag {tags[index]!r} {where} starts an entity, which IOB2 does not allow "
                    "(the data looks like IOB1: use scheme 'IOB1' or 'auto')",
                    sequence,
                    index,
                )
            converted.append(f"B-{entity_type}")
        previous = (prefix, entity_type)
    return converted


def to_iob2(tags: Sequence[str], scheme: str = "auto") -> List[str]:
    """Convert one tag sequence from ``scheme`` ("IOB1", "IOB2", "BIOES" or "auto") to IOB2.

    Raises TagError (a DataFormatError, with ``index`` set) for a malformed tag, for
    BIOES tags under an IOB scheme, and for an IOB2 sequence whose entity starts with
    ``I-``. For a corpus, prefer ``normalise_sequences``: "auto" then looks at every
    sentence, not just this one.
    """
    return _to_iob2(tags, resolve_scheme(scheme, [tags]), None)


def normalise_sequences(tag_sequences: Sequence[Sequence[str]], scheme: str = "auto") -> List[List[str]]:
    """Convert every tag sequence of a corpus to IOB2, detecting the scheme once for all.

    A TagError carries ``sequence`` and ``index`` so that the caller can report the
    file and line of the offending tag.
    """
    resolved = resolve_scheme(scheme, tag_sequences)
    return [_to_iob2(tags, resolved, sequence) for sequence, tags in enumerate(tag_sequences)]


def iob2_spans(tags: Sequence[str]) -> List[Span]:
    """Return the entities of a tag sequence as ``(type, start, end_exclusive)``.

    Any scheme's tags are accepted, leniently, as conlleval does: an ``I-X`` that does not
    continue an X entity starts a new one instead of being an error, because predicted
    sequences are not guaranteed to be well formed.
    """
    spans: List[Span] = []
    # BIOES is the most permissive scheme: it rejects no prefix and no I- that starts an entity.
    for index, tag in enumerate(_to_iob2(tags, "BIOES", None)):
        if tag.startswith("B-"):
            spans.append((tag[2:], index, index + 1))
        elif tag.startswith("I-"):
            entity_type, start, _ = spans[-1]
            spans[-1] = (entity_type, start, index + 1)
    return spans
