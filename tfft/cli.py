"""The ``tfft`` command line: argument parsing only; the work is done by the library.

    tfft train     fine-tune a classifier (flags or --config YAML)
    tfft evaluate  score a run on a labelled file, write the report beside the run
    tfft predict   one JSON object per input line (from a run, an exported SavedModel or a TFLite file)
    tfft export    SavedModel for TF Serving (raw-text and token-id signatures), or TensorFlow Lite
    tfft tune      hyperparameter search with KerasTuner
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
from typing import List, Optional

from tfft import __version__
from tfft.config import (
    EXPORT_PRECISIONS, POSITIVE_INT, TrainConfig, non_empty, option_keys, option_range, read_yaml,
)
from tfft.data import TOKEN_CLASSIFICATION
from tfft.errors import ConfigError, TfftError, os_failure
from tfft.export.tflite import QUANTIZATIONS
from tfft.words import WORD_SPLITS


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, documented by the field's help text."""
    parser.add_argument("--config", metavar="YAML", type=non_empty,
                        help="YAML file of options (keys as the flags, without --); "
                             "flags given on the command line override it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None else "")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if "bool" in str(f.type):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
            kwargs["help"] = f"{help_text}; one of: {', '.join(f.metadata['choices'])}"
        kwargs["type"] = option_range(f).parse_flag if option_range(f) is not None else non_empty
        parser.add_argument(flag, metavar=f.name.upper(), **kwargs)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line, ``tfft train: error: argument --learning-rate: must be ...``, exit 2: the
    full usage of ``train`` runs to dozens of lines and buries the one that matters (``--help`` shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the YAML file, then the flags actually given."""
    values = option_keys(read_yaml(args.config), args.config) if getattr(args, "config", None) else {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig.from_dict({**values, **flags}, source=args.config or "configuration")


DESCRIPTION = """Fine-tune BERT-family classifiers for token classification (NER) and sequence
classification (sentiment, topic, intent, sentence pairs), evaluate them, predict on raw text and
export them for TF Serving. `tfft COMMAND --help` documents each command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="tfft", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"tfft {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="also print TensorFlow's native log lines and error records (hidden by default)")

    train = commands.add_parser("train", parents=[common], help="fine-tune a token or sequence classifier",
                                description="Fine-tune a TF BERT classifier with model.fit, stop early on the "
                                            "validation metric, and write a run directory (config, labels, "
                                            "tokenizer, best model, metrics history, reports).")
    _add_config_flags(train)
    train.add_argument("--overwrite", action="store_true",
                       help="replace a finished run in --output-dir, or discard an unfinished one instead of "
                            "resuming it (by default a finished run is kept and an unfinished one resumes when "
                            "its options are the same)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", parents=[common], help="evaluate a run on a labelled file",
                                   description="Print the evaluation report of a run on labelled data (same "
                                               "format and reader options as training) and write it to "
                                               "RUN_DIR/reports/<file stem>.txt/.json (and a confusion matrix PNG).")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=non_empty, help="a directory written by `tfft train`")
    evaluate.add_argument("--data", required=True, metavar="FILE", type=non_empty,
                          help="labelled data file to evaluate on")
    evaluate.add_argument("--batch-size", type=POSITIVE_INT.parse_flag, default=None,
                          help="prediction batch size (default: the run's)")
    evaluate.add_argument("--max-examples", type=POSITIVE_INT.parse_flag, default=None,
                          help="score only the first N examples (default: all; for the run's own validation file, "
                               "the run's --max-validation-examples, so its recorded figures are reproduced)")
    evaluate.add_argument("--strategy", choices=("auto", "one-device", "mirrored", "tpu"), default="auto",
                          help="tf.distribute strategy whose replicas share each prediction batch: auto (mirrored "
                               "when this process sees more than one GPU), one-device, mirrored, tpu (experimental: untested "
                               "on TPUs) (default: auto)")
    evaluate.add_argument("--tpu", default=None, type=non_empty,
                          help="--strategy tpu (experimental): the TPU's name or grpc:// address")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", parents=[common], help="predict on raw text, one JSON object per line",
                                  description="Read one text per line (a file or - for stdin) and print one JSON "
                                              "object per line: entities with type, text, start, end and score for "
                                              "NER; label and class probabilities for classification.")
    predict.add_argument("run_dir", metavar="RUN_DIR", nargs="?", type=non_empty,
                         help="a directory written by `tfft train`")
    predict.add_argument("--saved-model", metavar="DIR", type=non_empty,
                         help="predict with an exported SavedModel (saved_models/NAME/VERSION) instead of a run "
                              "directory")
    predict.add_argument("--tflite", metavar="FILE", type=non_empty,
                         help="predict with a TensorFlow Lite export (saved_models/NAME/tflite/model-QUANTIZE.tflite, "
                              "its assets/ beside it; tokenization runs in Python)")
    predict.add_argument("--input", required=True, metavar="FILE_OR_-", type=non_empty,
                         help="text file, one input per line; - reads stdin")
    predict.add_argument("--input-format", choices=("text", "tokens"), default="text",
                         help="text: raw text, split into words by --word-split (default); "
                              'tokens (NER): JSON lines {"tokens": [...]}, already split into words')
    predict.add_argument("--word-split", choices=WORD_SPLITS, default=None,
                         help="NER: how raw text is split into words: natural (text as people write it: "
                              "punctuation, quotes and clitics become words of their own, as in CoNLL tokens) or "
                              "whitespace (text already tokenized with spaces); default: the run's word_split")
    predict.add_argument("--encoding", default="utf-8", type=non_empty,
                         help="encoding of the input file (default: utf-8)")
    predict.add_argument("--batch-size", type=POSITIVE_INT.parse_flag, default=None,
                         help="prediction batch size (default: the run's)")
    predict.add_argument("--context", choices=("sentence", "document"), default="sentence",
                         help="NER with a run trained with --context-window: 'document' when the input lines are "
                              "consecutive sentences of one document, so each is tagged with its neighbours as "
                              "context (default: sentence, each line on its own)")
    predict.add_argument("--words", action="store_true", help="NER: also print every word with its tag and score")
    predict.add_argument("--pair-separator", metavar="SEP", default=None, type=non_empty,
                         help="sentence-pair models: each line is TEXT<SEP>TEXT_PAIR, split at the first SEP "
                              "(e.g. $'\\t' for a tab)")
    predict.set_defaults(handler=_predict)

    export = commands.add_parser("export", parents=[common], help="export a run as a SavedModel for TF Serving",
                                 description="Write EXPORT_DIR/NAME/VERSION/, the layout TF Serving watches, with a "
                                             "raw-text `serving_default` signature (tokenizer in the graph, core "
                                             "TensorFlow ops only) and a `predict_ids` signature for token ids. The "
                                             "version directory is written elsewhere and renamed into place.")
    export.add_argument("run_dir", metavar="RUN_DIR", type=non_empty,
                        help="a directory written by `tfft train` (or `tfft tune`'s best/)")
    export.add_argument("--name", required=True, help="model name: one directory under EXPORT_DIR (no '/', not "
                                                      "starting with '.')")
    export.add_argument("--version", type=int, default=None, help="version number, a whole number from 1 (default: "
                                                                  "the next free one)")
    export.add_argument("--export-dir", default="saved_models", type=non_empty,
                        help="root of the model store (default: saved_models)")
    export.add_argument("--format", choices=("saved-model", "tflite"), default="saved-model",
                        help="saved-model: EXPORT_DIR/NAME/VERSION/ for TF Serving (default); tflite: the classifier "
                             "on token ids as EXPORT_DIR/NAME/tflite/model-QUANTIZE.tflite with its assets (tokenizer, "
                             "labels, settings), outside the version directories; tokenization stays in Python "
                             "(tfft predict --tflite FILE)")
    export.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                        help="--format saved-model: fp32 (default) or bf16, the encoder computed in bfloat16 for CPUs "
                             "with AVX512-BF16 or AMX (measured here: more sentences/s in batches, slower for one "
                             "sentence; see docs/results.md)")
    export.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="--format tflite: dynamic-int8 (int8 weights and matrix products, about 1/4 of the size) "
                             "or float16 (float16 weights, half the size, float32 compute)")
    export.set_defaults(handler=_export)

    from tfft.tuning.options import TUNE_DESCRIPTION, add_tune_arguments

    tune = commands.add_parser("tune", parents=[common], help="search hyperparameters with KerasTuner",
                               description=TUNE_DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_flags(tune)
    add_tune_arguments(tune)
    tune.set_defaults(handler=_tune)
    return parser


def _train(args) -> int:
    from tfft.training import train
    from tfft.training.timing import Stopwatch, seconds_since_process_start

    stopwatch = Stopwatch()  # the process's start-up (Python and TensorFlow imported) comes first
    stopwatch.add("start-up", seconds_since_process_start() or 0.0)
    result = train(config_from_args(args), overwrite=args.overwrite, stopwatch=stopwatch)
    best = ", ".join(f"{k}={v:.4f}" for k, v in result.best_scores.items())
    epoch = "-" if result.best_epoch is None else result.best_epoch + 1
    print(f"tfft train: done in {result.seconds:.0f}s; best epoch {epoch}: {best}; run directory {result.run_dir}")
    return 0


def _evaluate(args) -> int:
    from tfft.evaluation import evaluate_run

    report = evaluate_run(args.run_dir, args.data, batch_size=args.batch_size, max_examples=args.max_examples,
                          strategy=args.strategy, tpu=args.tpu)
    print(report.text)
    return 0


def _predict(args) -> int:
    from tfft.prediction import Predictor, predict_tokens, read_input_lines, read_token_lines, split_pairs

    if sum(source is not None for source in (args.run_dir, args.saved_model, args.tflite)) != 1:
        raise ConfigError("give one of RUN_DIR, --saved-model DIR or --tflite FILE")
    if args.input_format == "tokens" and args.pair_separator:
        raise ConfigError("--input-format tokens and --pair-separator cannot be combined")
    one_document = args.context == "document"
    if one_document and args.saved_model:
        raise ConfigError("--context document needs a token-classification run directory (the SavedModel tags "
                          "each text on its own)")
    sentences = read_token_lines(args.input, args.encoding) if args.input_format == "tokens" else None
    texts = read_input_lines(args.input, args.encoding) if sentences is None else None
    pairs = None
    if args.pair_separator:
        texts, pairs = split_pairs(texts, args.pair_separator, args.input)
    if args.saved_model:
        from tfft.export.predictor import SavedModelPredictor

        predictor = SavedModelPredictor(args.saved_model, batch_size=args.batch_size or 64, word_split=args.word_split)
    elif args.tflite:
        from tfft.export.tflite_predictor import TFLitePredictor

        predictor = TFLitePredictor.from_file(args.tflite, batch_size=args.batch_size)
    else:
        predictor = Predictor.from_run_dir(args.run_dir, batch_size=args.batch_size)
    if args.word_split and not args.saved_model:
        predictor.word_split = args.word_split
    if sentences is not None and predictor.task != TOKEN_CLASSIFICATION:
        raise ConfigError("--input-format tokens needs a token-classification model")
    if one_document and not (predictor.task == TOKEN_CLASSIFICATION and predictor.word_inputs.context_window):
        raise ConfigError(f"--context document needs a token-classification run trained with --context-window; "
                          f"{args.run_dir or args.tflite} was not")
    options = {"one_document": True} if one_document else {}  # a SavedModel predictor takes no such option
    results = (predict_tokens(predictor, sentences, **options) if sentences is not None
               else predictor.predict(texts, pairs, **options))
    for result in results:
        if not args.words:
            result.pop("words", None)
        print(json_line(result))
    return 0


# Characters str.splitlines() (and other line readers) break at that JSON leaves unescaped.
_LINE_BREAKS = {ord("\x85"): "\\u0085", ord("\u2028"): "\\u2028", ord("\u2029"): "\\u2029"}


def json_line(value) -> str:
    """One JSON object per output line, readable by any line reader (non-ASCII text kept as is)."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


def _export(args) -> int:
    from tfft.export.saved_model import MODEL_CARD, context_warning, export_run
    from tfft.ownership import check_outside_owned
    from tfft.run_dir import load_run_config

    check_outside_owned(args.export_dir, "--export-dir")
    if args.format == "tflite":
        if args.quantize is None or args.version is not None or args.precision != "fp32":
            raise ConfigError("--format tflite needs --quantize (dynamic-int8 or float16) and takes no --version or "
                              "--precision (it writes EXPORT_DIR/NAME/tflite/model-QUANTIZE.tflite)")
        from tfft.export.tflite import export_tflite

        path = export_tflite(args.run_dir, args.name, args.quantize, export_dir=args.export_dir)
        print(f"tfft export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB; token ids in, tokenizer and settings "
              f"in {path.parent / 'assets'}; run it with tfft predict --tflite {path})")
        return 0
    if args.quantize is not None:
        raise ConfigError("--quantize applies to --format tflite")
    path = export_run(args.run_dir, args.name, version=args.version, export_dir=args.export_dir,
                      precision=args.precision)
    card = json.loads((path / "assets" / MODEL_CARD).read_text(encoding="utf-8"))
    print(f"tfft export: wrote {path} (signatures: {', '.join(card['signatures'])}; {args.precision})")
    warning = context_warning(load_run_config(args.run_dir))
    if warning:
        print(f"tfft export: warning: {warning}", file=sys.stderr)
    return 0


def _tune(args) -> int:
    from tfft.training.data import prepare_data
    from tfft.tuning import search_space_from_args, tune
    from tfft.tuning.distributed import search_role, workers_told_of_failure

    with workers_told_of_failure(search_role(), args.trial_lease):  # a chief's bad data or model stops them too
        config = config_from_args(args)
        search_space_from_args(args, config)  # refuses a bad --search-space file before any data is read
        data = prepare_data(config)
        config = data.config  # an unset batch size and number of epochs settled, which the space starts from
        space = search_space_from_args(args, config)
    result = tune(config, tuner=args.tuner, max_trials=args.max_trials, space=space,
                  retrain_on_all=args.retrain_on_all, overwrite=args.overwrite, hyperband_factor=args.hyperband_factor,
                  data=data, lease_seconds=args.trial_lease)
    if result is None:
        print(f"tfft tune: worker {os.environ.get('KERASTUNER_TUNER_ID')} done; the chief writes the results")
        return 0
    best = result.report.best
    print(f"tfft tune: {len(result.report.completed)} trials completed, {len(result.report.failed)} failed; best trial "
          f"{best.trial_id} {result.report.objective}={best.objective:.4f}; results in {result.directory}; "
          f"best run directory {result.best_run.run_dir}")
    return 0


# What absl (TensorFlow's C++ logging) writes straight to file descriptor 2: oneDNN and CUDA
# start-up lines, kernel fallbacks. "E0000 ..." lines among them are not errors of the command.
NATIVE_LOG_LINE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] "
                             rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                             rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU)")


# TensorFlow's C++ log level that keeps only FATAL records (read once, at TensorFlow's first log record).
NATIVE_ERRORS_HIDDEN = "3"


@contextlib.contextmanager
def _native_logs_filtered():
    """Drop TensorFlow's native log lines from file descriptor 2 and pass everything else through.

    Why a filter and not a redirect: the same descriptor carries tfft's own messages and any
    Python traceback, which must still be seen. TensorFlow's ERROR records are not even written
    (its C++ log level is raised for the command): the filter sees lines, and an ERROR record can
    run to several (a lost multi-worker peer's "/job:worker/replica:0/task:1 / The tasks have
    crashed ..."), which would follow tfft's own one-line error. Python's exceptions carry
    what those records say; ``--verbose`` shows them.
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = NATIVE_ERRORS_HIDDEN
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_LOG_LINE.match(line):
                    os.write(terminal, line)

    thread = threading.Thread(target=forward, name="tfft-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end, so the thread reads to the end
        thread.join(timeout=5)
        os.close(terminal)
        if level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.nullcontext() if args.verbose else _native_logs_filtered():
        try:
            code = args.handler(args)
            sys.stdout.flush()  # a reader that has gone shows here, where it is handled
            return code
        except BrokenPipeError:
            return _output_closed()
        except TfftError as error:
            print(f"tfft {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"tfft {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # disk full, file too large, permission denied: one line, not a traceback
            problem = os_failure(error)
            if problem is None:
                raise
            print(f"tfft {args.command}: error: {problem}", file=sys.stderr)
            with contextlib.suppress(OSError):
                sys.stdout.flush()
                return 2
            _discard_output()  # stdout itself failed (a full disk): Python's last flush must not fail again
            return 2


def _output_closed() -> int:
    """The reader of stdout has gone (``tfft predict ... | head -1``): stop quietly with the status grep
    has there (128 + SIGPIPE = 141, a shell's ``$?`` either way)."""
    _discard_output()  # Python's own last flush of stdout must not fail again
    return 128 + signal.SIGPIPE


def _discard_output() -> None:
    """Point stdout's descriptor at /dev/null, so what is left in its buffer goes nowhere, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor (a test's) has nothing to redirect
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
