"""Evaluation reports (text + JSON) and plots (training curves, confusion matrix).

Reports are built from the same predictions the validation callback scores, so the
numbers ``tfft evaluate`` prints equal the ``val_*`` values of the same model and data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfft.config import POSITIVE_INT
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from tfft.data.labels import LabelMap
from tfft.errors import ConfigError
from tfft.features import encode_for_inference, inference_length, is_token_task
from tfft.files import atomic_write, write_json, write_text
from tfft.inference import predict_encoded
from tfft.heads import at_least_one_of, set_decision_rule, thresholds_of
from tfft.metrics import (
    AT_LEAST_ONE_SUFFIX, RuleChoice, candidate_key, choose_decision_rule, decide, label_set_matrix, multi_label_scores,
    score_predictions, tags_from_probabilities,
)
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
    decision_rule: Optional[dict] = None  # multi-label: the rule applied (and how it was chosen, when it just was)
    # Figures of the report: file name suffix -> a function drawing it into a PNG path.
    plots: Dict[str, Callable[[Path], None]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "task": self.task, "num_examples": self.num_examples, "scores": self.scores,
            "per_class": self.per_class, "labels": self.labels, "confusion_matrix": self.confusion_matrix,
            **({"decision_rule": self.decision_rule} if self.decision_rule is not None else {}),
        }

    def write(self, directory: Path, name: str) -> List[Path]:
        """Write ``name.txt``, ``name.json`` and the task's figures: ``name_confusion.png`` (sequence
        classification), ``name_label_f1.png`` (multi-label), ``name_scatter.png`` (regression)."""
        directory = Path(directory)
        written = [directory / f"{name}.txt", directory / f"{name}.json"]
        write_text(written[0], self.text)
        write_json(written[1], self.to_dict())
        for suffix, draw in self.plots.items():
            written.append(directory / f"{name}_{suffix}.png")
            draw(written[-1])
        return written


def evaluate_examples(model, tokenizer, examples: Sequence, label_map: LabelMap, *, max_length: Optional[int] = None,
                      stride: int = 32, batch_size: int = 64, jit_compile: bool = False,
                      word_inputs: Optional[WordInputs] = None, choose_rule_for: Optional[str] = None,
                      at_least_one: bool = False) -> EvaluationReport:
    """Predict ``examples`` (sliding windows for long token examples) and build the full report.

    ``max_length`` defaults to the model's maximum; for sequence classification pass the
    training ``max_length`` (as ``evaluate_run`` does), so that evaluation sees what training saw.
    ``word_inputs`` default to what the model takes (:func:`tfft.models.word_inputs_for`).
    Multi-label examples are decided by the model's decision rule; ``choose_rule_for`` (a metric,
    ``micro_f1`` or ``macro_f1``) first chooses the rule on these examples
    (:func:`tfft.metrics.choose_decision_rule`, ``at_least_one`` among the candidates when every training
    text has a label) and stores it in the model's config (training does, on the validation set).
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
    first = true_labels[0]
    if isinstance(first, tuple):
        choice = None
        if choose_rule_for:
            choice = choose_decision_rule(probabilities, label_set_matrix(true_labels, label_map), choose_rule_for,
                                          at_least_one)
            set_decision_rule(model.config, choice.rule)
        thresholds = np.asarray(thresholds_of(model.config, len(label_map)), np.float32)
        return _multi_label_report(true_labels, probabilities, label_map, thresholds, at_least_one_of(model.config),
                                   choice)
    scores = score_predictions(true_labels, probabilities, label_map)
    if token_task:
        return _entity_report(true_labels, tags_from_probabilities(probabilities, label_map.labels), scores)
    if isinstance(first, float):
        return _regression_report(np.asarray(true_labels, np.float64), probabilities[:, 0], scores)
    return _classification_report(true_labels, probabilities.argmax(-1), label_map, scores)


def _entity_report(true_tags, predicted_tags, scores) -> EvaluationReport:
    from seqeval.metrics import classification_report

    per_class = classification_report(true_tags, predicted_tags, output_dict=True, zero_division=0)
    per_class = {k: {m: float(v) for m, v in row.items()} for k, row in per_class.items()}
    text = classification_report(true_tags, predicted_tags, digits=4, zero_division=0)
    header = _score_line(scores)
    return EvaluationReport(TOKEN_CLASSIFICATION, scores, per_class, f"{header}\n\n{text}",
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
    header = "true\\pred".ljust(width) + "".join(n.rjust(width + 2) for n in names)
    counts = [name.ljust(width) + "".join(str(c).rjust(width + 2) for c in row) for name, row in zip(names, matrix)]
    by_row = normalise_rows(matrix)
    shares = [name.ljust(width) + "".join(f"{v:.3f}".rjust(width + 2) for v in row) for name, row in zip(names, by_row)]
    report_text = (f"{_score_line(scores)}\n\n{text}\nConfusion matrix (rows: true, columns: predicted)\n"
                   + "\n".join([header] + counts)
                   + "\n\nConfusion matrix normalised by row (each true class's share of predictions; the "
                     "diagonal is its recall)\n" + "\n".join([header] + shares) + "\n")
    per_class = {k: ({m: float(v) for m, v in row.items()} if isinstance(row, dict) else {"value": float(row)})
                 for k, row in per_class.items()}
    return EvaluationReport(SEQUENCE_CLASSIFICATION, scores, per_class, report_text, labels=names,
                            confusion_matrix=matrix.tolist(), num_examples=len(true_labels),
                            plots={"confusion": lambda path: plot_confusion_matrix(matrix, names, path)})


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row of zeros stays zeros): per true class, the share of each prediction."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)


def _multi_label_report(true_sets, probabilities: np.ndarray, label_map: LabelMap, thresholds: np.ndarray,
                        at_least_one: bool, choice: Optional[RuleChoice] = None) -> EvaluationReport:
    """Micro/macro scores of the model's decisions, and per label its threshold, precision, recall, F1, support
    (``choice``: the rule just chosen on these examples, whose candidates' held-out scores are reported)."""
    from sklearn.metrics import precision_recall_fscore_support

    truth = label_set_matrix(true_sets, label_map)
    scores = multi_label_scores(truth, probabilities, thresholds, at_least_one)
    predicted = decide(probabilities, thresholds, at_least_one).astype(np.int32)
    precision, recall, f1, support = precision_recall_fscore_support(truth.astype(np.int32), predicted,
                                                                     average=None, zero_division=0)
    names = [str(label) for label in label_map.labels]
    per_class = {name: {"threshold": float(t), "precision": float(p), "recall": float(r), "f1-score": float(f),
                        "support": float(n)}
                 for name, t, p, r, f, n in zip(names, thresholds, precision, recall, f1, support)}
    width = max(len(n) for n in names + ["label"])
    lines = ["label".ljust(width) + "".join(c.rjust(11) for c in ("threshold", "precision", "recall", "f1-score",
                                                                   "support"))]
    lines += [name.ljust(width) + "".join(f"{row[c]:.4f}".rjust(11) for c in ("threshold", "precision", "recall",
                                                                               "f1-score"))
              + f"{int(row['support'])}".rjust(11) for name, row in per_class.items()]
    text = f"{_score_line(scores)}\n\n" + "\n".join(lines) + f"\n\n{len(true_sets)} examples, " \
        f"{int(truth.sum())} labels in all, {int((truth.sum(axis=1) == 0).sum())} examples without a label\n"
    rule = {"at_least_one": at_least_one}
    if choice is not None:
        rule = {"name": choice.rule.name, "at_least_one": choice.rule.at_least_one, "chosen_for": choice.metric,
                "folds": choice.folds, "held_out": choice.held_out}
        text += _rule_choice_text(choice)
    elif at_least_one:
        text += "A text that no threshold selects takes its most probable label.\n"
    return EvaluationReport(MULTI_LABEL_CLASSIFICATION, scores, per_class, text, labels=names,
                            num_examples=len(true_sets), decision_rule=rule,
                            plots={"label_f1": lambda path: plot_label_f1(per_class, path)})


def _rule_choice_text(choice: RuleChoice) -> str:
    """The rule chosen and every candidate's scores on the folds it was not tuned on (0.5 and global among them)."""
    text = f"Decision rule chosen for {choice.metric}: {choice.rule.describe()}"
    if not choice.held_out:
        return text + " (too few examples to hold any out)\n"
    chosen = candidate_key(choice.rule.name, choice.rule.at_least_one)
    names = {"fixed": "0.5", "global": "global threshold", "shrunk": "per-label, shrunk", "per-label": "per-label"}
    lines = [f"{text}.", f"Scores held out ({choice.folds}-fold cross-validation on these examples: each rule tuned "
             f"on {choice.folds - 1} folds, scored on the one left out):", "rule".ljust(34) + "micro_f1".rjust(11)
             + "macro_f1".rjust(11)]
    for key, scores in choice.held_out.items():
        name = key.partition(AT_LEAST_ONE_SUFFIX)[0]
        label = names[name] + (", at least one" if key != name else "")
        lines.append(label.ljust(34) + f"{scores['micro_f1']:.4f}".rjust(11) + f"{scores['macro_f1']:.4f}".rjust(11)
                     + ("  <- chosen" if key == chosen else ""))
    return "\n".join(lines) + "\n"


def _regression_report(targets: np.ndarray, predicted: np.ndarray, scores: Dict[str, float]) -> EvaluationReport:
    text = (f"{_score_line(scores)}\n\n{len(targets)} examples; targets mean {targets.mean():.4f}, "
            f"sd {targets.std():.4f}, range [{targets.min():.4f}, {targets.max():.4f}]; predictions mean "
            f"{predicted.mean():.4f}, sd {predicted.std():.4f}\n")
    return EvaluationReport(REGRESSION, scores, {}, text, num_examples=len(targets),
                            plots={"scatter": lambda path: plot_scatter(targets, predicted, scores, path)})


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
    """Counts on the left; on the right each row normalised, so a rare class's errors show as clearly."""
    size = max(4, 0.6 * len(labels) + 2)
    figure = new_figure(figsize=(2 * size, size))
    for ax, values, title, text in zip(figure.subplots(1, 2), (matrix, normalise_rows(matrix)),
                                       ("counts", "normalised by row (recall on the diagonal)"),
                                       (str, lambda v: f"{v:.2f}")):
        ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="predicted", ylabel="true", title=title)
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, text(value), ha="center", va="center", color="white" if value > threshold else "black")
    figure.tight_layout()
    save_figure(figure, path)


def plot_label_f1(per_label: Dict[str, Dict[str, float]], path: Path) -> None:
    """Multi-label: each label's F1 at its threshold, with its support, most frequent label first."""
    ordered = sorted(per_label.items(), key=lambda item: -item[1]["support"])
    figure = new_figure(figsize=(max(5, 0.5 * len(ordered) + 2), 4))
    ax = figure.subplots()
    ax.bar(range(len(ordered)), [row["f1-score"] for _, row in ordered])
    ax.set_xticks(range(len(ordered)), [f"{name} ({int(row['support'])})" for name, row in ordered],
                  rotation=45, ha="right")
    ax.set(ylim=(0, 1), ylabel="F1", title="F1 per label (support) at its threshold")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def plot_scatter(targets: np.ndarray, predicted: np.ndarray, scores: Dict[str, float], path: Path) -> None:
    """Regression: predicted against gold values, with the line where they are equal."""
    figure = new_figure(figsize=(5, 5))
    ax = figure.subplots()
    ax.scatter(targets, predicted, s=8, alpha=0.4)
    low, high = float(min(targets.min(), predicted.min())), float(max(targets.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="gray", linewidth=1)
    ax.set(xlabel="gold", ylabel="predicted",
           title=f"pearson {scores['pearson']:.3f}, spearman {scores['spearman']:.3f}, rmse {scores['rmse']:.3f}")
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
    from tfft.distribution import Cluster
    from tfft.models import label_map_of
    from tfft.run_dir import REPORTS_SUBDIR, load_run, read_config_examples

    for name, value in (("batch_size", batch_size), ("max_examples", max_examples)):
        if value is not None:
            POSITIVE_INT.check(name, value)  # as `tfft evaluate` checks its flags: 0 or -1 are not "all"
    if strategy == "multi-worker":
        raise ConfigError("tfft evaluate runs in one process: use --strategy mirrored (every local GPU) or tpu, "
                          "not multi-worker")
    with Cluster.create(strategy, tpu=tpu).scope():
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
