"""Keras callbacks: the metric that matters in ``logs``, and crash-safe best checkpoints.

``ValidationMetrics`` must come first in the callbacks list: Keras calls callbacks in
order, and ``EarlyStopping``/``ModelCheckpoint``/``CSVLogger`` can only see ``val_f1``
after it has written it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from tfft.backend import keras
from tfft.data.labels import LabelMap
from tfft.distribution import Cluster
from tfft.errors import TrainingDivergedError
from tfft.files import atomic_write, hdf5_written_in_memory
from tfft.features import Encoding, encode_for_inference, inference_length, is_token_task
from tfft.inference import predict_encoded
from tfft.metrics import score_predictions
from tfft.models import word_inputs_for
from tfft.words import WordInputs

logger = logging.getLogger(__name__)


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch, score the validation set and add ``val_*`` entries to ``logs``.

    Token classification: seqeval entity-level ``val_precision``, ``val_recall``,
    ``val_f1`` plus ``val_accuracy`` (per word) and ``val_loss``. Sequence
    classification: ``val_accuracy``, ``val_macro_f1``, ``val_macro_precision``,
    ``val_macro_recall`` and ``val_loss``. Multi-label: micro and macro scores of the decision rule
    training would keep if the epoch were the best (:func:`tfft.metrics.score_predictions`). Long
    examples are scored over sliding windows, exactly as ``evaluate`` and ``predict`` do. Under a
    multi-worker strategy the chief's scores are given to every worker (see
    :meth:`tfft.distribution.Cluster.chief_values`).
    """

    def __init__(self, encoding: Optional[Encoding], true_labels: Sequence, label_map: LabelMap, *,
                 batch_size: int = 64, pad_token_id: int = 0, jit_compile: bool = False,
                 names: Optional[Sequence[str]] = None, cluster: Optional[Cluster] = None,
                 decision_metric: str = "micro_f1", at_least_one: bool = False):
        super().__init__()
        # Multi-label: the metric the decision rule is chosen for, and whether "at least one label" is a candidate.
        self.decision_metric, self.at_least_one = decision_metric, at_least_one
        self._cluster = cluster
        # The scores' names (no "val_"), in the order the chief sends them: given, the other workers of a
        # cluster skip scoring, whose result they would throw away for the chief's (and need no encoding).
        self.names = None if names is None else list(names)
        self.seconds = 0.0  # spent scoring, over all epochs
        self.encoding = encoding
        self.true_labels = list(true_labels)
        self.label_map = label_map
        self.batch_size = batch_size
        self.pad_token_id = pad_token_id
        self.jit_compile = jit_compile
        self.last_scores: Dict[str, float] = {}
        self._encode: Optional[Callable[[WordInputs], Encoding]] = None  # set by from_examples
        self._word_inputs: Optional[WordInputs] = None  # as given to from_examples
        self._encoded_with = WordInputs()

    @classmethod
    def from_examples(cls, tokenizer, examples, label_map: LabelMap, *, max_length: Optional[int] = None,
                      stride: int = 32, word_inputs: Optional[WordInputs] = None,
                      **options) -> "ValidationMetrics":
        """Encode validation examples once, up front, so each epoch only runs the model.

        ``word_inputs``: the model's word shapes and document context (token tasks). Unset, the
        shapes follow the model Keras gives the callback (re-encoded then if it takes shapes);
        given ones that contradict that model are refused (:func:`tfft.models.word_inputs_for`).
        """
        label_map.check(examples)

        def encode(inputs: WordInputs) -> Encoding:
            return encode_for_inference(tokenizer, examples, max_length or inference_length(tokenizer), stride,
                                        word_inputs=inputs)

        if is_token_task(examples):
            true_labels = [list(e.tags) for e in examples]
        else:
            true_labels = [e.label for e in examples]
        metrics = cls(encode(word_inputs or WordInputs()), true_labels, label_map,
                      pad_token_id=tokenizer.pad_token_id, **options)
        metrics._encode, metrics._word_inputs, metrics._encoded_with = encode, word_inputs, word_inputs or WordInputs()
        return metrics

    @property
    def cluster(self) -> Cluster:
        """The run's cluster, as given; else the strategy in scope when Keras calls the callback."""
        return self._cluster or Cluster.current()

    def set_model(self, model) -> None:
        super().set_model(model)
        if self._encode is not None:
            inputs = word_inputs_for(model, self._word_inputs)
            if inputs != self._encoded_with:
                self.encoding, self._encoded_with = self._encode(inputs), inputs

    def score(self) -> Dict[str, float]:
        """Score the current model on the validation set (no ``val_`` prefix)."""
        words_per_example = [len(t) for t in self.true_labels] if self.encoding.word_index is not None else None
        probabilities = predict_encoded(
            self.model, self.encoding, words_per_example=words_per_example, batch_size=self.batch_size,
            pad_token_id=self.pad_token_id, jit_compile=self.jit_compile, cluster=self.cluster,
        )
        return score_predictions(self.true_labels, probabilities, self.label_map, self.decision_metric,
                                 self.at_least_one)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        started = time.perf_counter()
        scores = self.score() if self.names is None or self.cluster.is_chief else dict.fromkeys(self.names, 0.0)
        names = self.names or list(scores)
        # Every worker of a cluster takes the chief's figures, so they all stop at the same epoch.
        self.last_scores = dict(zip(names, self.cluster.chief_values([scores[name] for name in names])))
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in self.last_scores.items()})
        self.seconds += time.perf_counter() - started


class LastEpochsAveraging(keras.callbacks.Callback):
    """Make the last epoch's weights the mean of the trainable weights at the ends of the last ``epochs`` epochs.

    Why: the learning rate decays to zero over the last epochs, whose ends lie around one optimum; their
    mean generalises better than any one of them (default model, CoNLL-2003 validation entity F1 0.9370
    -> 0.9386 averaging epochs 2 and 3; see docs/results.md). Put before :class:`ValidationMetrics`, so the
    averaged weights are what the last epoch is scored, checkpointed and saved as; a run early stopping
    ends before its last epoch and averages nothing. The earlier epochs' weights are kept in memory and,
    on the chief, in ``state_dir`` (the backup), so a resumed run averages the same epochs; a repeated
    epoch replaces its own snapshot.
    """

    def __init__(self, epochs: int, state_dir: Optional[Path] = None, save_state: bool = True):
        super().__init__()
        self.epochs = epochs
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.save_state = save_state
        self._snapshots: Dict[int, list] = {}

    def _snapshot_file(self, epoch: int) -> Path:
        return self.state_dir / f"epoch_average-{epoch + 1}.npz"

    def _snapshot(self, epoch: int) -> list:
        if epoch not in self._snapshots:  # a resumed run: the chief's file
            with np.load(self._snapshot_file(epoch)) as saved:
                self._snapshots[epoch] = [saved[str(i)] for i in range(len(saved.files))]
        return self._snapshots[epoch]

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        last = self.params["epochs"] - 1
        first = max(0, last - self.epochs + 1)
        if epoch < first or first == last:
            return
        variables = self.model.trainable_variables
        values = [variable.numpy() for variable in variables]
        if epoch < last:
            self._snapshots[epoch] = values
            if self.state_dir is not None and self.save_state:
                atomic_write(self._snapshot_file(epoch),
                             lambda tmp: np.savez(tmp, **{str(i): v for i, v in enumerate(values)}))
            return
        earlier = [self._snapshot(e) for e in range(first, last)]
        for i, variable in enumerate(variables):
            variable.assign(sum((snapshot[i] for snapshot in earlier), values[i]) / (len(earlier) + 1))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop a fit whose training loss has become NaN or infinite, with an error naming the epoch and ``advice``
    (the options most likely to blame).

    Why: Keras trains on, and the run would finish "successfully" with NaN weights, NaN scores
    and empty predictions. The check runs at the end of each epoch, whose mean loss is NaN or
    infinite once any step's is, so no step waits to hand its loss over; the callback must come
    before every other ``on_epoch_end``, so that no validation score, best checkpoint, history row
    or backup is written from the diverged weights.
    """

    def __init__(self, advice: str):
        super().__init__()
        self.advice = advice

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDivergedError(f"the training loss became {float(loss)} in epoch {epoch + 1}: the model "
                                        f"diverged and its weights are no longer numbers. {self.advice}")


class EarlyStoppingAfterLearning(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` whose patience starts counting only once the monitored score has left 0.

    Why: on a few hundred sentences, entity F1 commonly stays exactly 0 for the first epochs
    while the model learns the ``O`` majority; stopping then ends a run that was about to learn.
    (For a monitored loss, mode ``min``, this is plain ``EarlyStopping``.)

    ``state_path``: a JSON file kept beside ``BackupAndRestore``'s state, so a resumed fit goes on
    with the best value and the epochs already waited instead of counting patience afresh (and
    stops at the epoch an uninterrupted fit stops at). The state of each of the last two epochs
    is kept: a kill between this file and the backup leaves the backup one epoch behind, and a
    resume takes the state of the epoch the backup restored. Only a writer (``save_state``; the
    chief of a cluster) writes it; every worker reads it, so all stop at the same epoch.
    """

    def __init__(self, *args, state_path: Optional[os.PathLike] = None, save_state: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_path = None if state_path is None else Path(state_path)
        self.save_state = save_state
        self._first_epoch = True

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        super().on_train_begin(logs)
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        if not self._first_epoch:
            return
        self._first_epoch = False
        if epoch == 0 or self.state_path is None or not self.state_path.is_file():
            return
        state = json.loads(self.state_path.read_text()).get(str(epoch - 1))
        if state is None:
            logger.warning("%s holds no early-stopping state of epoch %d: patience counts from the resumed epoch",
                           self.state_path, epoch)
            return
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.state_path is None or not self.save_state:
            return
        kept = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        kept = {key: value for key, value in kept.items() if key == str(epoch - 1)}
        kept[str(epoch)] = {"wait": self.wait, "best": float(self.best), "best_epoch": self.best_epoch}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_path, lambda tmp: Path(tmp).write_text(json.dumps(kept)))

    def _is_improvement(self, monitor_value, reference_value) -> bool:
        if self.monitor_op == np.greater and monitor_value == 0 and reference_value == 0:
            return True
        return super()._is_improvement(monitor_value, reference_value)


class BestWeightsCheckpoint(keras.callbacks.Callback):
    """Keep the weights of the best epoch on disk, crash-safe.

    Each new best is written to its own file (``best_weights-epoch<N>.h5`` beside ``path``),
    then a small record naming that file and its score replaces ``path.json`` atomically:
    the record is the commit point, so a run killed at any moment leaves a record and the
    weights it names, never a record of one epoch with the weights of another. Older weight
    files are removed after the commit. A resumed run (``BackupAndRestore``) reads the record
    and keeps comparing against its best.
    """

    def __init__(self, path: os.PathLike, monitor: str = "val_f1", mode: str = "max"):
        super().__init__()
        self.path = Path(path)
        self.state_path = self.path.with_suffix(".json")
        self.monitor = monitor
        self.better = np.greater if mode == "max" else np.less
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.weights_file: Optional[Path] = None
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            self.best, self.best_epoch = state["best"], state["epoch"]
            self.weights_file = self.path.parent / state["weights"]

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            raise KeyError(
                f"BestWeightsCheckpoint monitors '{self.monitor}', which is not in logs "
                f"(available: {sorted(logs or {})}); put ValidationMetrics before it in the callbacks list"
            )
        if self.best is not None and not self.better(current, self.best):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        weights_file = self.path.with_name(f"{self.path.stem}-epoch{epoch + 1}{self.path.suffix}")
        with hdf5_written_in_memory():  # a full disk: an OSError, not a crash
            atomic_write(weights_file, lambda tmp: self.model.save_weights(tmp))
        atomic_write(self.state_path, lambda tmp: Path(tmp).write_text(json.dumps(
            {"monitor": self.monitor, "best": float(current), "epoch": epoch, "weights": weights_file.name})))
        self.best, self.best_epoch, self.weights_file = float(current), epoch, weights_file
        for older in _epoch_weight_files(self.path):
            if older != weights_file:
                older.unlink()

    def restore(self) -> Optional[int]:
        """Load the best weights into the model; returns the best epoch (0-based) or None."""
        if self.weights_file is not None and self.weights_file.is_file():
            self.model.load_weights(str(self.weights_file))
            return self.best_epoch
        return None

    @staticmethod
    def discard(path: os.PathLike) -> None:
        """Remove what a checkpoint at ``path`` keeps on disk (once the run's model is saved)."""
        path = Path(path)
        for file in [path.with_suffix(".json"), *_epoch_weight_files(path)]:
            file.unlink(missing_ok=True)


def _epoch_weight_files(path: Path):
    """The per-epoch weight files a BestWeightsCheckpoint at ``path`` writes (``best-epoch<N>.h5``)."""
    return path.parent.glob(f"{path.stem}-epoch*{path.suffix}")


class ProgressLog(keras.callbacks.Callback):
    """One line every ``every`` steps with loss and sentences/s, for logs written to files.

    Keras' progress bar only prints at epoch end when output is not a terminal, which
    leaves a long background run silent for many minutes.
    """

    def __init__(self, batch_size: float, every: int = 50):
        super().__init__()
        self.batch_size = batch_size
        self.every = every

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch, self.started, self.timed_from = epoch, time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if (batch + 1) % self.every:
            return
        now = time.perf_counter()
        rate = (batch + 1 - self.timed_from) * self.batch_size / max(now - self.started, 1e-9)
        self.started, self.timed_from = now, batch + 1
        total = self.params.get("steps") or "?"
        print(f"epoch {self.epoch + 1} step {batch + 1}/{total} - loss {logs.get('loss', float('nan')):.4f} "
              f"- {rate:.1f} sentences/s", flush=True)
