"""Evaluation reports (text + JSON) and plots (training curves, confusion matrix).

Reports are built from the same predictions the validation callback scores, so the
numbers ``tfft evaluate`` prints equal the ``val_*`` values of the same model and data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfft.data.labels import LabelMap
from tfft.errors import ConfigError
from tfft.features import encode_for_inference, inference_length, is_token_task
from tfft.files import atomic_write, write_json, write_text
from tfft.inference import predict_encoded
from tfft.metrics import score_predictions, tags_from_probabilities
from tfft.models import word_inputs_for
from tfft.words import WordInputs


@dataclass
class EvaluationReport:
    """Scores of one model on one labelled data set."""

    task: str
    scores: Dict[str, float]
    per_class: Dict[str, Dict[str, float]]
    text: str
    labels: List[str] = field(default_factory=list)
    confusion_matrix: Optional[List[List[int]]] = None
    num_examples: int = 0

    def to_dict(self) -> dict:
        return {
            "task": self.task, "num_examples": self.num_examples, "scores": self.scores,
            "per_class": self.per_class, "labels": self.labels, "confusion_matrix": self.confusion_matrix,
        }

    def write(self, directory: Path, name: str) -> List[Path]:
        """Write ``name.txt``, ``name.json`` and, for classification, ``name_confusion.png``."""
        directory = Path(directory)
        written = [directory / f"{name}.txt", directory / f"{name}.json"]
        write_text(written[0], self.text)
        write_json(written[1], self.to_dict())
        if self.confusion_matrix is not None:
            written.append(directory / f"{name}_confusion.png")
            plot_confusion_matrix(np.asarray(self.confusion_matrix), self.labels, written[-1])
        return written


def evaluate_examples(model, tokenizer, examples: Sequence, label_map: LabelMap, *, max_length: Optional[int] = None,
                      stride: int = 32, batch_size: int = 64, jit_compile: bool = False,
                      word_inputs: Optional[WordInputs] = None) -> EvaluationReport:
    """Predict ``examples`` (sliding windows for long token examples) and build the full report.

    ``max_length`` defaults to the model's maximum; for sequence classification pass the
    training ``max_length`` (as ``evaluate_run`` does), so that evaluation sees what training saw.
    ``word_inputs`` default to what the model takes (:func:`tfft.models.word_inputs_for`).
    """
    label_map.check(examples)
    encoding = encode_for_inference(tokenizer, examples, max_length or inference_length(tokenizer), stride,
                                    word_inputs=word_inputs_for(model, word_inputs))
    token_task = is_token_task(examples)
    true_labels = [list(e.tags) for e in examples] if token_task else [e.label for e in examples]
    probabilities = predict_encoded(
        model, encoding, words_per_example=[len(t) for t in true_labels] if token_task else None,
        batch_size=batch_size, pad_token_id=tokenizer.pad_token_id, jit_compile=jit_compile,
    )
    scores = score_predictions(true_labels, probabilities, label_map)
    if token_task:
        return _entity_report(true_labels, tags_from_probabilities(probabilities, label_map.labels), scores)
    return _classification_report(true_labels, probabilities.argmax(-1), label_map, scores)


def _entity_report(true_tags, predicted_tags, scores) -> EvaluationReport:
    from seqeval.metrics import classification_report

    per_class = classification_report(true_tags, predicted_tags, output_dict=True, zero_division=0)
    per_class = {k: {m: float(v) for m, v in row.items()} for k, row in per_class.items()}
    text = classification_report(true_tags, predicted_tags, digits=4, zero_division=0)
    header = _score_line(scores)
    return EvaluationReport("token-classification", scores, per_class, f"{header}\n\n{text}",
                            num_examples=len(true_tags))


def _classification_report(true_labels, predicted_ids, label_map: LabelMap, scores) -> EvaluationReport:
    from sklearn.metrics import classification_report, confusion_matrix

    true_ids = np.asarray([label_map.id(label) for label in true_labels])
    ids = list(range(len(label_map)))
    names = [str(label) for label in label_map.labels]
    per_class = classification_report(true_ids, predicted_ids, labels=ids, target_names=names,
                                      output_dict=True, zero_division=0)
    text = classification_report(true_ids, predicted_ids, labels=ids, target_names=names, digits=4, zero_division=0)
    matrix = confusion_matrix(true_ids, predicted_ids, labels=ids)
    width = max(len(n) for n in names + ["true\\pred"])
    rows = ["true\\pred".ljust(width) + "".join(n.rjust(width + 2) for n in names)]
    rows += [name.ljust(width) + "".join(str(c).rjust(width + 2) for c in row) for name, row in zip(names, matrix)]
    report_text = f"{_score_line(scores)}\n\n{text}\nConfusion matrix (rows: true, columns: predicted)\n" + "\n".join(rows) + "\n"
    per_class = {k: ({m: float(v) for m, v in row.items()} if isinstance(row, dict) else {"value": float(row)})
                 for k, row in per_class.items()}
    return EvaluationReport("sequence-classification", scores, per_class, report_text, labels=names,
                            confusion_matrix=matrix.tolist(), num_examples=len(true_labels))


def _score_line(scores: Dict[str, float]) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in scores.items())


def plot_training_curves(history: Dict[str, List[float]], path: Path) -> None:
    """One panel for losses, one for the other validation metrics, per epoch."""
    losses = {k: v for k, v in history.items() if k.endswith("loss") and v}
    others = {k: v for k, v in history.items() if k.startswith("val_") and not k.endswith("loss") and v}
    figure = new_figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for ax, series, title in ((axes[0], losses, "loss"), (axes[1], others, "validation metrics")):
        for name, values in series.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if series:
            ax.legend()
        ax.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path) -> None:
    size = max(4, 0.6 * len(labels) + 2)
    figure = new_figure(figsize=(size, size))
    ax = figure.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    figure.tight_layout()
    save_figure(figure, path)


def new_figure(figsize):
    """A Matplotlib figure drawn off-screen (Agg) without pyplot, so the caller's backend is untouched.

    Imported on use: `import tfft` should not pay for matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> None:
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))


def evaluate_run(run_dir, data: str, batch_size: Optional[int] = None,
                 max_examples: Optional[int] = None, strategy: str = "auto", tpu: Optional[str] = None
                 ) -> EvaluationReport:
    """Evaluate a ``tfft train`` run on a labelled file and write the report beside the run
    (``RUN_DIR/reports/<file stem>.{txt,json}``).

    ``max_examples`` scores only the first examples. When ``data`` is the run's own
    validation file it defaults to the run's ``max_validation_examples``, so re-evaluating
    reproduces the validation figures the run (or a tuning trial) recorded. ``strategy``:
    a one-process ``tf.distribute`` strategy (see ``tfft.distribution``) whose replicas share
    each prediction batch; evaluation is not spread over several processes.
    """
    from tfft.distribution import create_strategy
    from tfft.models import label_map_of
    from tfft.run_dir import REPORTS_SUBDIR, load_run, read_config_examples

    if strategy == "multi-worker":
        raise ConfigError("tfft evaluate runs in one process: use --strategy mirrored (every local GPU) or tpu, "
                          "not multi-worker")
    with create_strategy(strategy, tpu=tpu).scope():
        config, model, tokenizer = load_run(run_dir)
        if max_examples is None and config.validation and _same_file(data, config.validation):
            max_examples = config.max_validation_examples
        examples = read_config_examples(config, data, max_examples)
        report = evaluate_examples(
            model, tokenizer, examples, label_map_of(model),
            max_length=inference_length(tokenizer, config.task, config.max_length), stride=config.stride,
            batch_size=batch_size or config.eval_batch_size, jit_compile=config.xla,
            word_inputs=config.word_inputs,
        )
    report.write(Path(run_dir) / REPORTS_SUBDIR, Path(str(data).split(":")[-1]).stem or "evaluation")
    return report


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b
