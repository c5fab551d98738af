"""Every mistake a user can make on the command line, in one table: each is refused before any
training with exit code 2, a message that names the file and line, the option or the key,
no traceback, and nothing left behind; unusual but valid inputs are accepted.

Runs ``tfft`` in-process (``tfft.cli.main``) on the tiny test BERT, so the whole table takes
seconds; argparse's own refusals (unknown choices, non-numbers) surface as ``SystemExit(2)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tfft.cli import main

NER = "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"
NER_VALID = "Peter B-PER\n\nEU B-ORG\n"
SENTIMENT = "text\tlabel\nthe film is good\t1\na dull mess\t0\ngood\t1\nbad\t0\n"

# name: (files to write, argv after `tfft`, the regex the error must match)
# In argv and files, {dir} is the test's directory and {model} the tiny checkpoint.
BAD = {
    "yaml learning rate not a number": (
        {"run.yaml": "task: token-classification\ntrain: {dir}/train.txt\nlearning_rate: fast\n"},
        ["train", "--config", "{dir}/run.yaml"], r"run\.yaml: the 'learning_rate' option must be a finite number > 0\. Got 'fast'"),
    "yaml unknown key": (
        {"run.yaml": "task: token-classification\ntrain: {dir}/train.txt\nlearnig_rate: 1.0e-4\n"},
        ["train", "--config", "{dir}/run.yaml"], r"run\.yaml: unknown option\(s\) learnig_rate"),
    "yaml not a mapping": ({"run.yaml": "- a\n- b\n"}, ["train", "--config", "{dir}/run.yaml"],
                           r"run\.yaml: expected a mapping"),
    "yaml missing": ({}, ["train", "--config", "{dir}/nope.yaml"], r"nope\.yaml: configuration file not found"),
    "yaml key given twice": ({"run.yaml": "task: token-classification\ntrain: {dir}/train.txt\nepochs: 1\n"
                                          "epochs: 2\n"},
                             ["train", "--config", "{dir}/run.yaml"],
                             r"run\.yaml:4: the key 'epochs' is given twice \(first on line 3\)"),
    "yaml not utf-8": ({"run.yaml": b"task: token-classification\ntext_column: r\xe9sum\xe9\n"},
                       ["train", "--config", "{dir}/run.yaml"], r"run\.yaml:2: cannot decode byte 0xe9 .* as utf-8"),
    "yaml infinite learning rate": ({"run.yaml": "task: token-classification\ntrain: {dir}/train.txt\n"
                                                 "learning_rate: .inf\n"}, ["train", "--config", "{dir}/run.yaml"],
                                    r"run\.yaml: the 'learning_rate' option must be a finite number > 0\. Got inf"),
    "warmup fraction 2": ({}, ["train", "--warmup-fraction", "2"],
                          r"argument --warmup-fraction: must be a number in \[0, 1\)"),
    "dropout 1": ({}, ["train", "--dropout", "1"], r"argument --dropout: must be a number in \[0, 1\)"),
    "infinite learning rate": ({}, ["train", "--learning-rate", "inf"],
                               r"argument --learning-rate: must be a finite number > 0; got 'inf'"),
    "weight decay not a number": ({}, ["train", "--weight-decay", "nan"],
                                  r"argument --weight-decay: must be a finite number >= 0; got 'nan'"),
    "negative seed": ({}, ["train", "--seed", "-1"], r"argument --seed: must be an integer from 0 to 2147483647"),
    "empty output directory": ({}, ["train", "--output-dir", ""], r"argument --output-dir: must not be empty"),
    "evaluate max examples -1": ({}, ["evaluate", "{run}", "--data", "{dir}/valid.txt", "--max-examples", "-1"],
                                 r"argument --max-examples: must be an integer from 1 to 2147483647; got '-1'"),
    "evaluate max examples 0": ({}, ["evaluate", "{run}", "--data", "{dir}/valid.txt", "--max-examples", "0"],
                                r"argument --max-examples: must be an integer from 1 to 2147483647; got '0'"),
    "csv header naming a column twice": ({"train.csv": "text,label,text\ngood,1,bad\n"},
                                         ["train", "--task", "sequence-classification", "--train", "{dir}/train.csv"],
                                         r"train\.csv:1: the header names the column 'text' twice"),
    "stride above max length": ({}, ["train", "--stride", "64", "--max-length", "64"],
                                r"'stride' option must be below max_length \(64\)"),
    "monitor of the other task": ({}, ["train", "--monitor", "val_macro_f1"],
                                  r"'monitor' option must be one of the metrics token-classification produces"),
    "monitor without validation": ({"run.yaml": "task: token-classification\ntrain: {dir}/train.txt\n"
                                                "monitor: val_f1\n"},
                                   ["train", "--config", "{dir}/run.yaml"],
                                   r"'monitor' option \(val_f1\) needs validation data"),
    "zero epochs": ({}, ["train", "--epochs", "0"], r"argument --epochs: must be an integer from 1 to"),
    "negative patience": ({}, ["train", "--patience", "-1"], r"argument --patience: must be an integer from 0 to"),
    "negative context": ({}, ["train", "--context-window", "-5"],
                         r"argument --context-window: must be an integer from 0"),
    "negative LoRA rank": ({}, ["train", "--lora-rank", "-4"], r"argument --lora-rank: must be an integer from 0"),
    "LoRA alpha without a rank": ({}, ["train", "--lora-alpha", "32"],
                                  r"'lora_alpha' option applies to LoRA only; set --lora-rank"),
    "missing training file": ({}, ["train", "--train", "{dir}/missing.txt"], r"missing\.txt: no such file"),
    "tag column beyond the file": ({}, ["train", "--tag-column", "4"], r"train\.txt:1: expected .* columns"),
    "unseen validation label": ({"valid.txt": "Bonn B-LOC\n"}, ["train"],
                                r"valid\.txt:1: .*B-LOC"),
    "bad tag": ({"train.txt": "EU ORG-B\n"}, ["train"], r"train\.txt:1: "),
    "undecodable training file": ({"train.txt": b"caf\xe9 O\n"}, ["train"], r"train\.txt:1: cannot decode"),
    "model directory missing": ({}, ["train", "--model", "{dir}/no-model"], r"no-model: model directory not found"),
    "model directory without weights": ({"broken/config.json": '{"model_type": "bert"}'},
                                        ["train", "--model", "{dir}/broken"], r"broken: cannot load"),
    "mixed label types": ({"train.jsonl": '{"text": "good", "label": 1}\n{"text": "bad", "label": "neg"}\n'},
                          ["train", "--task", "sequence-classification", "--train", "{dir}/train.jsonl",
                           "--validation", "{dir}/train.jsonl"],
                          r"train\.jsonl:2: .*label"),
    "missing text column": ({"train.tsv": "body\tlabel\ngood\t1\nbad\t0\n"},
                            ["train", "--task", "sequence-classification", "--train", "{dir}/train.tsv"],
                            r"train\.tsv.*text"),
    "predict on a directory that is no run": ({"notrun/x": ""}, ["predict", "{dir}/notrun", "--input", "-"],
                                              r"notrun: not a tfft run directory"),
    "predict on a run with a corrupt model": (
        {"corrupt/config.yaml": "task: token-classification\ntrain: x\n", "corrupt/model/config.json": "{"},
        ["predict", "{dir}/corrupt", "--input", "-"], r"corrupt/model: "),
    "predict input missing": ({}, ["predict", "{run}", "--input", "{dir}/nothing.txt"], r"nothing\.txt: no such file"),
    "predict tokens not json": ({"in.jsonl": "Anna flew\n"},
                                ["predict", "{run}", "--input", "{dir}/in.jsonl", "--input-format", "tokens"],
                                r"in\.jsonl:1: expected a JSON object"),
    "predict document context on a saved model": (
        {}, ["predict", "--saved-model", "{dir}", "--input", "-", "--context", "document"],
        r"--context document needs a token-classification run directory"),
    "predict document context with a run trained without it": (
        {}, ["predict", "{run}", "--input", "-", "--context", "document"],
        r"--context document needs a token-classification run trained with --context-window"),
    "word shapes for sequence classification": (
        {"train.tsv": SENTIMENT}, ["train", "--task", "sequence-classification", "--train", "{dir}/train.tsv",
                                   "--validation", "{dir}/train.tsv", "--word-shapes"],
        r"'word_shapes', 'context_window' and 'packing' options are for token classification"),
    "stride beyond the model's window": ({}, ["train", "--stride", "61"],
                                         r"'stride' option must be below 61 for this model"),
    "max length beyond the model's window": ({}, ["train", "--max-length", "100000"],
                                             r"'max_length' option must be at most 64 for this model"),
    "predict batch size below one": ({}, ["predict", "{run}", "--input", "-", "--batch-size", "-1"],
                                     r"argument --batch-size: must be an integer from 1 to 2147483647; got '-1'"),
    "evaluate batch size zero": ({}, ["evaluate", "{run}", "--data", "{dir}/valid.txt", "--batch-size", "0"],
                                 r"argument --batch-size: must be an integer from 1 to 2147483647; got '0'"),
    "predict tokens that UTF-8 cannot encode": ({"in.jsonl": '{"tokens": ["Anna", "\\ud800"]}\n'},
                                                ["predict", "{run}", "--input", "{dir}/in.jsonl", "--input-format",
                                                 "tokens"], r"in\.jsonl:1: tokens must be text that UTF-8 can encode"),
    "predict with an unknown word rule": ({}, ["predict", "{run}", "--input", "-", "--word-split", "spacy"],
                                          r"argument --word-split: invalid choice: 'spacy'"),
    "predict without a model": ({}, ["predict", "--input", "-"],
                                r"give one of RUN_DIR, --saved-model DIR or --tflite FILE"),
    "predict pairs without separator": ({"pairs.txt": "a b\n"},
                                        ["predict", "{run}", "--input", "{dir}/pairs.txt", "--pair-separator", "|"],
                                        r"pairs\.txt:1: expected TEXT'\|'TEXT_PAIR"),
    "export a directory that is no run": ({}, ["export", "{dir}/none", "--name", "x", "--export-dir", "{dir}/out"],
                                          r"none: not a tfft run directory"),
    "export of a model whose tokenizer has no graph twin": (
        {"wl/config.yaml": "task: token-classification\ntrain: x\n",
         "wl/model/tokenizer.json": '{"normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, '
                                    '"model": {"type": "WordLevel", "vocab": {}}}'},
        ["export", "{dir}/wl", "--name", "x", "--export-dir", "{dir}/out"],
        r"wl: tfft export runs the tokenizer in the serving graph, and this run's tokenizer has no graph twin: "
        r"tokenizer.json: a WordLevel model with pre-tokenizer Whitespace has no in-graph twin"),
    "evaluate with unseen labels": ({"test.txt": "Bonn B-LOC\n"}, ["evaluate", "{run}", "--data", "{dir}/test.txt"],
                                    r"test\.txt:1: .*B-LOC"),
    "task name": ({}, ["train", "--task", "ner"], r"argument --task: invalid choice: 'ner'"),
    "precision name": ({}, ["train", "--precision", "fp8"], r"argument --precision: invalid choice: 'fp8'"),
    "batch size not a number": ({}, ["train", "--batch-size", "many"], r"argument --batch-size: must be an integer from 1 to 2147483647; got 'many'"),
    "strategy name": ({}, ["train", "--strategy", "horovod"], r"argument --strategy: invalid choice: 'horovod'"),
    "tpu address without the tpu strategy": ({}, ["train", "--tpu", "grpc://10.0.0.2:8470"],
                                             r"'tpu' option is for --strategy tpu"),
    "slurm without multi-worker": ({}, ["train", "--cluster-resolver", "slurm"],
                                   r"'cluster_resolver' option is for --strategy multi-worker"),
    "slurm outside a slurm job": ({}, ["train", "--strategy", "multi-worker", "--cluster-resolver", "slurm"],
                                  r"--cluster-resolver slurm needs to run inside a Slurm job"),
    "search trials across workers": ({}, ["tune", "--strategy", "multi-worker"],
                                     r"A search runs each trial in one process"),
    "evaluate across workers": ({}, ["evaluate", "{run}", "--data", "{dir}/valid.txt", "--strategy", "multi-worker"],
                                r"argument --strategy: invalid choice: 'multi-worker'"),
}

BASE_TRAIN = ["--task", "token-classification", "--train", "{dir}/train.txt", "--validation", "{dir}/valid.txt",
              "--model", "{model}", "--output-dir", "{dir}/runs/out", "--epochs", "1", "--no-tensorboard"]


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("conformance-run")
    (directory / "train.txt").write_text(NER, encoding="utf-8")
    (directory / "valid.txt").write_text(NER_VALID, encoding="utf-8")
    argv = [a.format(dir=directory, model=tiny_model_dir) for a in ["train", *BASE_TRAIN]]
    assert main(argv) == 0
    return directory / "runs" / "out"


def run_cli(argv, capsys):
    """Exit code and stderr of ``tfft ARGV``, exceptions other than SystemExit propagating (a traceback)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_clearly_and_leaves_nothing(case, tmp_path, tiny_model_dir, trained_run, capsys,
                                                         monkeypatch):
    files, argv, expected = BAD[case]
    (tmp_path / "train.txt").write_text(NER, encoding="utf-8")
    (tmp_path / "valid.txt").write_text(NER_VALID, encoding="utf-8")
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{dir}", str(tmp_path)), encoding="utf-8")
    if argv[0] in ("train", "tune") and "--config" not in argv:
        argv = [argv[0], *BASE_TRAIN, *argv[1:]]
    argv = [a.format(dir=tmp_path, model=tiny_model_dir, run=trained_run) for a in argv]
    monkeypatch.setattr("sys.stdin", open(tmp_path / "train.txt"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, error = run_cli(argv, capsys)
    assert code == 2, error
    assert re.search(expected, error), error
    assert "Traceback" not in error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_unusual_but_valid_inputs_train(tmp_path, tiny_model_dir, capsys):
    """BOM, CRLF, tabs and trailing spaces, four columns, IOB1 tags, quoted YAML numbers."""
    (tmp_path / "train.txt").write_bytes(
        "\ufeff-DOCSTART- -X- -X- O\r\n\r\nEU NNP B-NP I-ORG \r\nrejects\tVBZ\tB-VP\tO\r\n\r\n"
        "Peter NNP B-NP I-PER\r\nBlackburn NNP I-NP I-PER\r\n".encode("utf-8"))
    (tmp_path / "valid.txt").write_text("Peter NNP B-NP I-PER\n", encoding="utf-8")
    (tmp_path / "run.yaml").write_text(
        f"task: token-classification\ntrain: {tmp_path}/train.txt\nvalidation: {tmp_path}/valid.txt\n"
        f"model: {tiny_model_dir}\noutput-dir: {tmp_path}/run\nepochs: '1'\nlearning_rate: 1e-3\ntensorboard: no\n")
    code, error = run_cli(["train", "--config", str(tmp_path / "run.yaml")], capsys)
    assert code == 0, error
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert set(labels["id2label"].values()) == {"O", "B-ORG", "I-ORG", "B-PER", "I-PER"}


def test_empty_predict_input_prints_nothing_and_succeeds(trained_run, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert run_cli(["predict", str(trained_run), "--input", str(tmp_path / "empty.txt")], capsys)[0] == 0
    assert capsys.readouterr().out == ""


def test_cli_hides_tensorflow_native_log_lines_but_not_its_own_messages(tmp_path):
    import subprocess
    import sys

    from tfft.cli import NATIVE_LOG_LINE

    command = [sys.executable, "-m", "tfft.cli", "export", str(tmp_path), "--name", "x",
               "--export-dir", str(tmp_path / "out")]
    quiet = subprocess.run(command, capture_output=True, timeout=300)
    assert quiet.returncode == 2
    lines = quiet.stderr.decode().splitlines()
    assert lines == [f"tfft export: error: {tmp_path}: not a tfft run directory (expected config.yaml and model/ in it)"]
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, timeout=300)
    assert verbose.returncode == 2 and verbose.stderr.decode().splitlines()[-1] == lines[0]
    assert NATIVE_LOG_LINE.match(b"I0000 00:00:1796116645.100809   21416 cudart_stub.cc:31] Could not find cuda")
    assert NATIVE_LOG_LINE.match(b"E0000 00:00:1796114112.405756    7863 cuda_platform.cc:52] failed call to cuInit")
    assert not NATIVE_LOG_LINE.match(b"tfft export: error: I0000 is not a run")


# A command whose TensorFlow writes a multi-line native ERROR record (as its coordination service does for a
# lost multi-worker peer) before tfft's own error.
NATIVE_RECORD_THEN_ERROR = """
import sys
from tfft import cli
from tfft.errors import ConfigError

def lost_peer(args):
    from tfft.backend import tf
    tf.raw_ops.PrintV2(input="/job:worker/replica:0/task:1\\nThe tasks have crashed.", output_stream="log(error)")
    raise ConfigError("lost worker 1")

cli._evaluate = lost_peer
sys.exit(cli.main(sys.argv[1:]))
"""


def test_cli_hides_every_line_of_a_multi_line_native_record_and_keeps_its_own_error(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-c", NATIVE_RECORD_THEN_ERROR, "evaluate", str(tmp_path), "--data", "x.txt"]
    quiet = subprocess.run(command, capture_output=True, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.decode().splitlines() == ["tfft evaluate: error: lost worker 1"]
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, timeout=300)  # the record was written
    assert "The tasks have crashed." in verbose.stderr.decode().splitlines()
