"""The readers on the real corpora in ../shared/data (skipped where they are absent)."""

from pathlib import Path

import pytest

from tfft.data import LabelMap, read_conll, read_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(relative):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} is not present (shared data is only on development machines)")
    return path


def test_conll2003_train():
    examples = read_conll(shared("conll2003/train.txt"))
    assert len(examples) == 14041
    assert examples[0].tokens[:3] == ["EU", "rejects", "German"]
    label_map = LabelMap.from_token_examples(examples)
    assert label_map.labels == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    label_map.check(read_conll(shared("conll2003/valid.txt")))


def test_sst2_train():
    examples = read_table(shared("sst2/train.tsv"), text_column="sentence")
    assert len(examples) == 60614
    assert {e.label for e in examples} == {"0", "1"}
    assert examples[0].text == "when are bears bears and"  # the space before the tab is stripped
    assert LabelMap.from_text_examples(examples).labels == ("0", "1")
