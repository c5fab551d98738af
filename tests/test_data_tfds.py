"""read_tfds against mocked registered datasets and against a tiny dataset prepared on disk.

Nothing here touches the network: ``tfds.testing.mock_data`` generates examples from the
builders' feature specs, and the local builder is prepared from in-test data.
"""

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from tfft.backend import tf  # noqa: E402
from tfft.data import read_examples  # noqa: E402
from tfft.data.examples import TextExample, TokenExample  # noqa: E402
from tfft.data.tfds import read_tfds  # noqa: E402
from tfft.errors import ConfigError, DataFormatError  # noqa: E402

_SENTENCES = [
    (["EU", "rejects", "German", "call"], ["I-ORG", "O", "I-MISC", "O"]),
    (["Peter", "Blackburn"], ["I-PER", "I-PER"]),
    (["BRUSSELS", "1996-08-22"], ["I-LOC", "O"]),
]
_TAG_NAMES = ["O", "I-PER", "I-ORG", "I-LOC", "I-MISC"]  # an IOB1 tag set, to see it converted


class TfftTinyCorpus(tfds.core.GeneratorBasedBuilder):
    """Three sentences with both a text-classification and a token-classification view."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                    "tokens": tfds.features.Sequence(tfds.features.Text()),
                    "ner_tags": tfds.features.Sequence(tfds.features.ClassLabel(names=_TAG_NAMES)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, (tokens, tags) in enumerate(_SENTENCES):
            yield i, {"text": " ".join(tokens) + " ", "label": i % 2, "tokens": tokens, "ner_tags": tags}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    TfftTinyCorpus(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def test_prepared_local_dataset_text_view(tiny_data_dir):
    examples = read_tfds("tfft_tiny_corpus", "train", data_dir=tiny_data_dir)
    assert sorted((e.text, e.label) for e in examples) == [
        ("BRUSSELS 1996-08-22", "negative"),
        ("EU rejects German call", "negative"),
        ("Peter Blackburn", "positive"),
    ]
    assert examples[0].source == "<tfds:tfft_tiny_corpus:train>:0"


def test_prepared_local_dataset_token_view_is_converted_to_iob2(tiny_data_dir):
    examples = read_tfds("tfft_tiny_corpus", "train[:3]", data_dir=tiny_data_dir, task="token-classification")
    assert sorted((e.tokens, e.tags) for e in examples) == [
        (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]


def test_dispatcher_reads_tfds_names(tiny_data_dir):
    examples = read_examples("tfds:tfft_tiny_corpus:train[:2]", "sequence-classification", data_dir=tiny_data_dir)
    assert len(examples) == 2 and all(isinstance(e, TextExample) for e in examples)
    with pytest.raises(ConfigError, match="expected 'tfds:NAME"):
        read_examples("tfds:", "sequence-classification")


def test_errors_of_the_local_dataset(tiny_data_dir, tmp_path):
    with pytest.raises(DataFormatError, match=r"is not prepared in .* tfds build tfft_tiny_corpus --data_dir"):
        read_tfds("tfft_tiny_corpus", "train", data_dir=str(tmp_path))
    with pytest.raises(DataFormatError, match="cannot read split 'tset'"):
        read_tfds("tfft_tiny_corpus", "tset", data_dir=tiny_data_dir)
    with pytest.raises(DataFormatError, match="no feature 'sentence'; the features are 'text', 'label', 'tokens', 'ner_tags'"):
        read_tfds("tfft_tiny_corpus", "train", data_dir=tiny_data_dir, text_key="sentence")
    with pytest.raises(DataFormatError, match=r"unknown tfds dataset 'no_such_dataset_xyz': .*not found\.$"):
        read_tfds("no_such_dataset_xyz", "train", data_dir=str(tmp_path))


def test_unprepared_registered_dataset_is_not_downloaded(tmp_path):
    with pytest.raises(DataFormatError, match=r"^<tfds:glue/sst2:train>: tfds dataset 'glue/sst2' is not prepared"):
        read_tfds("glue/sst2", "train", data_dir=str(tmp_path))
    assert not any(tmp_path.rglob("*.tfrecord*"))


@pytest.mark.parametrize("name, names", [("glue/sst2", {"negative", "positive"}), ("imdb_reviews", {"neg", "pos"})])
def test_mocked_text_datasets_give_class_names(name, names):
    with tfds.testing.mock_data(num_examples=8):
        examples = read_tfds(name, "train")
    assert len(examples) == 8
    assert {e.label for e in examples} <= names
    assert all(isinstance(e.text, str) and e.text for e in examples)


def test_mocked_conll2003_gives_iob2_tag_names():
    # conll2003 in tfds names its tag feature "ner"; the mock's random sequences have unrelated
    # lengths per feature, so the examples are supplied with matching tokens and tags.
    def as_dataset(self, split, **kwargs):
        names = self.info.features["ner"].feature.names
        rows = {
            "tokens": [["EU", "rejects", "German"], ["Peter", "Blackburn"]],
            "ner": [[names.index("B-ORG"), 0, names.index("B-MISC")], [names.index("B-PER"), names.index("I-PER")]],
        }
        return tf.data.Dataset.from_tensor_slices({key: tf.ragged.constant(value) for key, value in rows.items()}).map(
            lambda row: {key: value.to_tensor() if hasattr(value, "to_tensor") else value for key, value in row.items()}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        examples = read_tfds("conll2003", "validation", task="token-classification")
    assert examples == [
        TokenExample(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        TokenExample(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]


def test_a_tfds_pair_dataset_is_recorded_as_pairs_for_export_and_predict(tiny_model_dir):
    from tfft.config import TrainConfig
    from tfft.training.data import prepare_data

    config = TrainConfig(task="sequence-classification", train="tfds:glue/mrpc:train", model=str(tiny_model_dir))
    with tfds.testing.mock_data(num_examples=6):
        data = prepare_data(config)
    assert all(e.text_pair for e in data.train_examples)
    assert data.config.text_pair_column == "sentence2"  # saved in config.yaml: export serves text + text_pair
