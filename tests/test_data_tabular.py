import re

import pytest

from tfft.data.examples import TextExample
from tfft.data.tabular import read_table, table_format
from tfft.errors import ConfigError, DataFormatError


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def at(path, line=None):
    return "^" + re.escape(f"{path}:{line}: " if line is not None else f"{path}: ")


def test_csv_with_header_quotes_and_string_labels(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\n"Hello, world",  positive \r\nbad film,negative\n\n')
    examples = read_table(path)
    assert examples == [TextExample("Hello, world", None, "positive"), TextExample("bad film", None, "negative")]
    assert [e.source for e in examples] == [f"{path}:2", f"{path}:3"]


def test_csv_quoted_field_spanning_lines_keeps_later_line_numbers(tmp_path):
    path = write(tmp_path, "a.csv", 'id,text,label\n1,"two\nlines",1\n2,next,0\n3,,0\n')
    with pytest.raises(DataFormatError, match=at(path, 5) + "empty text in column 'text'"):
        read_table(path)


def test_tsv_like_sst2(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nit 's a \"charming journey \t1\nno ' good \t0\n")
    examples = read_table(path, text_column="sentence")
    assert examples == [TextExample('it \'s a "charming journey', None, "1"), TextExample("no ' good", None, "0")]


def test_headerless_tsv_with_column_indices_and_explicit_format(tmp_path):
    path = write(tmp_path, "data.txt", "0\tfirst text\tsecond text\n1\tmore\tand more\n")
    examples = read_table(path, text_column=1, text_pair_column=2, label_column=0, file_format="tsv")
    assert examples == [TextExample("first text", "second text", "0"), TextExample("more", "and more", "1")]
    assert examples[0].source == f"{path}:1"


def test_jsonl_with_int_bool_float_and_string_labels_and_pairs(tmp_path):
    lines = [
        '{"premise": "A man", "hypothesis": "A person", "label": 1}',
        "",
        '{"premise": "B", "hypothesis": "C", "label": true}',
        '{"premise": "D", "hypothesis": "E", "label": 2.0}',
        '{"premise": "F", "hypothesis": "G", "label": " entailment "}',
    ]
    path = write(tmp_path, "nli.jsonl", "\n".join(lines))
    examples = read_table(path, text_column="premise", text_pair_column="hypothesis")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [
        ("A man", "A person", "1"),
        ("B", "C", "true"),
        ("D", "E", "2"),
        ("F", "G", "entailment"),
    ]
    assert [e.source for e in examples] == [f"{path}:{n}" for n in (1, 3, 4, 5)]


def test_unlabelled_file_has_no_labels(tmp_path):
    path = write(tmp_path, "test.csv", "text\nfoo\n")
    assert read_table(path, labelled=False) == [TextExample("foo")]


def test_latin1_file(tmp_path):
    path = write(tmp_path, "a.tsv", "text\tlabel\nok\t1\ncafé\t0\n", encoding="latin-1")
    assert read_table(path, encoding="latin-1")[1].text == "café"
    with pytest.raises(DataFormatError, match=at(path, 3) + r"cannot decode byte 0xe9 .* as utf-8; .*--encoding"):
        read_table(path)


def test_format_from_extension():
    assert [table_format(name) for name in ("a.csv", "a.TSV", "a.tab", "a.jsonl", "a.ndjson", "a.json")] == [
        "csv", "tsv", "tsv", "jsonl", "jsonl", "jsonl"
    ]
    assert table_format("a.txt", "TSV") == "tsv"
    with pytest.raises(ConfigError, match=r"cannot read the extension of 'a\.txt' as a table"):
        table_format("a.txt")


def test_missing_column_lists_the_available_ones(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\nfoo\t1\n")
    with pytest.raises(DataFormatError, match=at(path, 2) + "no column 'text'; the columns are 'sentence', 'label'"):
        read_table(path)


def test_missing_key_in_a_json_line(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n')
    with pytest.raises(DataFormatError, match=at(path, 2) + "no column 'label'; the columns are 'text'"):
        read_table(path)


@pytest.mark.parametrize(
    "name, text, line, message",
    [
        ("a.csv", "text,label\nfoo,1\n   ,0\n", 3, "empty text in column 'text'"),
        ("a.csv", "text,label\nfoo,1\nbar,0,extra\n", 3, "expected 2 fields like the header, got 3"),
        ("a.tsv", "text\tlabel\nfoo\t1\nbar\n", 3, "expected 2 fields like the header, got 1"),
        ("a.csv", "text,label\nfoo,\n", 2, "missing label"),
        ("a.tsv", "text\tlabel\nfoo\t1\na\rb\t1\n", 3, "cannot parse TSV row: new-line character seen in unquoted field$"),
        ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', 2, r"invalid JSON: .* \(column \d+\)"),
        ("a.jsonl", '["a", 1]\n', 1, "expected a JSON object per line, got list"),
        ("a.jsonl", '{"text": "a", "label": null}\n', 1, "missing label"),
        ("a.jsonl", '{"text": "a", "label": 2.5}\n', 1, "label 2.5 is not a class name"),
        ("a.jsonl", '{"text": 3, "label": 1}\n', 1, "text in column 'text' must be a string, got int 3"),
        # a column named twice would silently give one of the two
        ("a.csv", "text,label,text\nfoo,1,bar\n", 1, "the header names the column 'text' twice"),
        ("a.tsv", "\ntext\tlabel\tlabel\nfoo\t1\t0\n", 2, "the header names the column 'label' twice"),
        ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1, "text": "c"}\n', 2,
         "the object has the key 'text' twice"),
    ],
)
def test_row_errors_name_file_and_line(tmp_path, name, text, line, message):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=at(path, line) + message):
        read_table(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.csv", "", "the file is empty"),
        ("a.tsv", "\n\n", "the file is empty"),
        ("a.csv", "text,label\n\n", "contains no rows after the header"),
        ("a.jsonl", "\n", "contains no rows"),
    ],
)
def test_files_without_rows(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=at(path) + message):
        read_table(path)


def test_column_options_must_agree(tmp_path):
    path = write(tmp_path, "a.tsv", "foo\t1\n")
    with pytest.raises(ConfigError, match="all names .* or all indices"):
        read_table(path, text_column=0)  # label_column is still the name "label"
    with pytest.raises(ConfigError, match="label_column is needed"):
        read_table(path, label_column=None)
    with pytest.raises(ConfigError, match="JSON Lines rows are objects"):
        read_table(path, text_column=0, label_column=1, file_format="jsonl")
