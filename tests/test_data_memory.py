import math

import pytest

from tfft.data.examples import TextExample, TokenExample
from tfft.data.memory import from_dataframe, from_texts, from_tokens
from tfft.errors import DataFormatError


def test_from_texts_with_labels_and_pairs():
    examples = from_texts([" a ", "b"], [1, "neg "], text_pairs=["x", "y"])
    assert examples == [TextExample("a", "x", "1"), TextExample("b", "y", "neg")]
    assert [e.source for e in examples] == ["<texts>:0", "<texts>:1"]
    assert from_texts(("a",)) == [TextExample("a")]


@pytest.mark.parametrize(
    "texts, labels, pairs, message",
    [
        (["a", " "], [0, 1], None, "^<texts>:1: empty text$"),
        (["a", "b"], [0], None, "^<texts>: 2 texts but 1 labels$"),
        (["a"], [0], ["x", "y"], "^<texts>: 1 texts but 2 text pairs$"),
        (["a", "b"], [0, None], None, "^<texts>:1: missing label$"),
        (["a"], [0], [""], "^<texts>:0: empty text pair$"),
        ([], None, None, "^<texts>: no texts$"),
    ],
)
def test_from_texts_errors(texts, labels, pairs, message):
    with pytest.raises(DataFormatError, match=message):
        from_texts(texts, labels, pairs)


def test_from_tokens_converts_to_iob2():
    examples = from_tokens([["EU", "rejects"], ["Peter", "Blackburn"]], [["I-ORG", "O"], ["I-PER", "I-PER"]])
    assert examples == [TokenExample(["EU", "rejects"], ["B-ORG", "O"]), TokenExample(["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert examples[1].source == "<tokens>:1"
    assert from_tokens([["a"]]) == [TokenExample(["a"], None)]


@pytest.mark.parametrize(
    "tokens, tags, message",
    [
        ([["a", "b"]], [["O"]], "^<tokens>:0: 2 tokens but 1 tags$"),
        ([["a"], ["b"]], [["O"]], "^<tokens>: 2 token lists but 1 tag lists$"),
        ([["a"], []], [["O"], []], "^<tokens>:1: empty token list$"),
        ([["a"], ["b", ""]], None, "^<tokens>:1: empty token$"),
        ([["a"], ["b", "c"]], [["O"], ["O", "PER"]], r"^<tokens>:1: malformed tag 'PER'.* \(tag 1\)$"),
    ],
)
def test_from_tokens_errors(tokens, tags, message):
    with pytest.raises(DataFormatError, match=message):
        from_tokens(tokens, tags)


def test_from_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"sentence": ["a", "b"], "q": ["x", "y"], "label": [0, 1]}, index=[10, 20])
    examples = from_dataframe(df, text_column="sentence", text_pair_column="q")
    assert examples == [TextExample("a", "x", "0"), TextExample("b", "y", "1")]
    assert examples[1].source == "<dataframe>:1"  # position, not the DataFrame index
    assert from_dataframe(df, "sentence", label_column=None) == [TextExample("a"), TextExample("b")]


def test_from_dataframe_errors():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"text": ["a", "b"], "label": [1.0, math.nan]})
    with pytest.raises(DataFormatError, match="^<dataframe>:1: missing label$"):
        from_dataframe(df)
    with pytest.raises(DataFormatError, match="^<dataframe>: no column 'sentence'; the columns are 'text', 'label'$"):
        from_dataframe(df, text_column="sentence")
