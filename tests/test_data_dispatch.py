import subprocess
import sys

import pytest

from tfft.data import TextExample, TokenExample, read_examples
from tfft.errors import ConfigError


def test_token_classification_reads_conll_whatever_the_extension(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("EU I-ORG\n")
    assert read_examples(path, "token-classification") == [TokenExample(["EU"], ["B-ORG"])]
    assert read_examples(path, "token-classification", scheme="IOB1")[0].tags == ["B-ORG"]


def test_sequence_classification_reads_tables_by_extension(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood \t1\n")
    assert read_examples(str(path), "sequence-classification", text_column="sentence") == [TextExample("good", None, "1")]
    with pytest.raises(ConfigError, match="cannot read the extension"):
        read_examples(tmp_path / "train.txt", "sequence-classification")


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task 'ner'; expected one of: token-classification, sequence-classification"):
        read_examples("x.txt", "ner")


def test_importing_the_readers_does_not_import_tensorflow():
    code = "import sys, tfft.data; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
