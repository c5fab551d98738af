"""The encoder families tfft trains and serves, keyed by ``config.model_type`` (see :mod:`tfft.families.base`).

An unknown ``model_type`` is refused by name, with the supported list, before anything is
built: a family's block layout, projections and tokenizer conventions are facts tfft must
know, and guessing them would fail later with a transformers traceback (or train silently
without what the user asked for).
"""

from __future__ import annotations

from typing import Dict, List

from tfft.errors import ModelLoadError
from tfft.families import albert, bert, deberta_v2, distilbert, electra, mpnet, roberta
from tfft.families.base import TOKENIZER_KINDS, Family, note_once

FAMILIES: List[Family] = [bert.FAMILY, electra.FAMILY, distilbert.FAMILY, mpnet.FAMILY, roberta.ROBERTA,
                          roberta.XLM_ROBERTA, albert.FAMILY, deberta_v2.FAMILY]
REGISTRY: Dict[str, Family] = {model_type: family for family in FAMILIES for model_type in family.model_types}

__all__ = ["FAMILIES", "REGISTRY", "TOKENIZER_KINDS", "Family", "family_of", "family_table", "note_once"]


def family_of(config_or_model) -> Family:
    """The family of a transformers config (or of a model, through its ``config``); a clear refusal otherwise."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    family = REGISTRY.get(model_type)
    if family is None:
        raise ModelLoadError(f"tfft does not support {model_type or 'this'} models; it supports the families "
                             f"{', '.join(REGISTRY)} (model_type in config.json; see docs/families.md)")
    return family


def family_table() -> str:
    """The Markdown table of docs/families.md, rendered from the families themselves."""
    rows = ["| family (`model_type`) | tokenizer | token types, word shapes | positions | packed rows "
            "| lean inference pass | LoRA query/value projections | checkpoints |",
            "|---|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        projections = " / ".join(f"`{'.'.join(family.projections[name])}`" for name in ("query", "value"))
        rows.append(" | ".join([
            f"| {family.name} ({', '.join(f'`{t}`' for t in family.model_types)})",
            f"`{family.tokenizer}`: {family.subwords}",
            "yes" if family.token_types else "no",
            family.positions,
            "yes" if family.packing else "no (length buckets)",
            "yes" if family.lean_pass else "no (the model's call)",
            projections,
            family.checkpoints,
        ]) + " |")
    return "\n".join(rows) + "\n"
