"""Which ``tf.distribute`` strategy a run uses, and what a worker of a multi-worker cluster may do.

tfft scales with TensorFlow's own engines: the strategy is created once per process, before
any model, and everything that creates variables (model, optimizer, metrics) is created in
its scope. A run builds one :class:`Cluster` around its strategy and passes it down. In a
multi-worker cluster every worker runs the same command; only the chief writes the run
directory, the others write nothing that outlives them, and values that decide control flow
(validation scores, hence early stopping; the chief's refusal to start) are taken from the
chief so that all workers stop together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from tfft.backend import tf
from tfft.config import STRATEGIES, TrainConfig
from tfft.errors import ConfigError, TfftError
from tfft.run_dir import BACKUP_SUBDIR, work_dir_of

_created: Dict[Tuple, tf.distribute.Strategy] = {}


def create_strategy(name: str = "auto", cluster_resolver: str = "tf-config", tpu: Optional[str] = None
                    ) -> tf.distribute.Strategy:
    """The strategy called ``name`` (see :data:`STRATEGIES`), created once per process.

    ``auto``: MirroredStrategy when the process sees more than one GPU, else the default
    (one-device) strategy. ``mirrored`` uses every local GPU, or every logical CPU device when
    there is no GPU (tests split one CPU into several). ``multi-worker`` reads the cluster
    from ``TF_CONFIG`` (``cluster_resolver="tf-config"``) or from Slurm's environment
    (``"slurm"``). ``tpu`` connects to the TPU at ``tpu`` (empty: the local TPU VM).
    """
    key = (name, cluster_resolver, tpu)
    if key not in _created:
        _created[key] = _new_strategy(name, cluster_resolver, tpu)
    return _created[key]


def _new_strategy(name: str, cluster_resolver: str, tpu: Optional[str]) -> tf.distribute.Strategy:
    # Listing logical devices initialises TensorFlow, after which collectives cannot be set up any more.
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi-worker":
        resolver = _cluster_resolver(cluster_resolver)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"The 'strategy' option must be one of {', '.join(STRATEGIES)}. Got {name!r} instead.")


def _cluster_resolver(kind: str):
    if kind == "slurm":
        if "SLURM_JOB_ID" not in os.environ:
            raise ConfigError("--cluster-resolver slurm needs to run inside a Slurm job (SLURM_JOB_ID is not set); "
                              "start the workers with srun, see docs/scaling.md")
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    check_tf_config()
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def check_tf_config() -> None:
    """Fail clearly when ``TF_CONFIG`` cannot describe this process's place in a cluster."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ConfigError("--strategy multi-worker needs the cluster in the TF_CONFIG environment variable, e.g. "
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                          '"index": 0}} (or --cluster-resolver slurm); see docs/scaling.md')
    try:
        config = json.loads(text)
        workers = config["cluster"]
        task = config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"TF_CONFIG is not valid: expected JSON with 'cluster' and 'task' (type, index); {error}: "
                          f"{text[:200]}") from None
    if task_type not in workers or not 0 <= index < len(workers[task_type]):
        raise ConfigError(f"TF_CONFIG: task {task_type}:{index} is not in its cluster {workers}")


REASON_BYTES = 2048
# What a collective of a worker whose peer died or became unreachable raises (gRPC's UNAVAILABLE,
# "Collective ops is aborted by: ...", a timed-out collective).
LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


class WorkerLostError(TfftError):
    """Another worker of a multi-worker cluster died or could not be reached in the middle of a run."""


@dataclass(frozen=True)
class Cluster:
    """The one place that knows where this process trains, built once per run and passed down.

    It holds the run's strategy and answers what the rest of tfft asks of a cluster: how many
    replicas and workers there are, this process's role (the chief writes the run, every
    worker trains), the collectives that keep the workers in step (a barrier, the chief's
    values and decisions on every worker), and the paths each process writes and reads.
    Collectives must be called by every worker, in the same order.
    """

    strategy: tf.distribute.Strategy

    @classmethod
    def create(cls, name: str = "auto", cluster_resolver: str = "tf-config", tpu: Optional[str] = None
               ) -> "Cluster":
        """The cluster of the strategy called ``name`` (see :func:`create_strategy`)."""
        return cls(create_strategy(name, cluster_resolver, tpu))

    @classmethod
    def of(cls, config: TrainConfig) -> "Cluster":
        """The cluster a run of ``config`` (or a search's trials) trains on: its strategy options."""
        return cls.create(config.strategy, config.cluster_resolver, config.tpu)

    @classmethod
    def current(cls) -> "Cluster":
        """The cluster of the strategy in scope (one device outside any scope): for the library's callers
        that build models in a scope of their own."""
        return cls(tf.distribute.get_strategy())

    def scope(self) -> ContextManager[tf.distribute.Strategy]:
        """The strategy's scope, in which variables (model, optimizer, metrics) must be created."""
        return self.strategy.scope()

    @property
    def replicas(self) -> int:
        """Replicas that train together, over all workers."""
        return self.strategy.num_replicas_in_sync

    @property
    def workers(self) -> int:
        """The number of processes (input pipelines) that train together."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or isinstance(self.strategy, tf.distribute.TPUStrategy):
            return 1
        spec = resolver.cluster_spec().as_dict()
        return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run: the ``chief`` task, else worker 0 (Keras' convention)."""
        return self.index == 0

    @property
    def index(self) -> int:
        """This process's place among the workers: 0 for the chief (and a one-process run), then 1, 2, ...
        in the order of the cluster spec's workers (the order of ``InputContext.input_pipeline_id``)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or self.workers == 1 or resolver.task_type in (None, "chief"):
            return 0
        has_chief = "chief" in resolver.cluster_spec().as_dict()
        return int(resolver.task_id) + int(has_chief)

    def work_dir(self, run_dir: Path) -> Optional[Path]:
        """Where this process builds the run: the chief's hidden sibling of ``run_dir`` (see
        :func:`tfft.run_dir.work_dir_of`); None on the other workers, which write nothing that outlives them."""
        return work_dir_of(Path(run_dir)) if self.is_chief else None

    def backup_dir(self, run_dir: Path) -> Path:
        """The ``BackupAndRestore`` state every process resumes from: the chief's, which only it writes."""
        return work_dir_of(Path(run_dir)) / BACKUP_SUBDIR

    def chief_values(self, values: Sequence[float]) -> np.ndarray:
        """The chief's ``values`` on every worker (a collective; a lost peer is a ``WorkerLostError``, so the
        barriers and broadcasts built on it name the lost worker as a fit does)."""
        values = np.asarray(values, np.float64)
        if self.workers == 1:
            return values
        own = tf.constant(values)
        with self.peers_watched():
            per_replica = self.strategy.experimental_distribute_values_from_function(
                lambda context: own if context.replica_id_in_sync_group == 0 else tf.zeros_like(own))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()

    def broadcast_reason(self, reason: Optional[str]) -> Optional[str]:
        """The chief's ``reason`` (None: no objection) on every worker; the others pass anything.

        A collective, so also a barrier. How the chief's refusal to start a run (a finished run,
        a held lock, changed options) reaches the workers at once, instead of leaving them
        waiting at a barrier the chief will never reach. Reasons longer than ``REASON_BYTES``
        UTF-8 bytes are cut, ending in "...".
        """
        data = (reason or "").encode("utf-8")
        if len(data) > REASON_BYTES:
            data = data[:REASON_BYTES - 3] + b"..."
        values = np.zeros(REASON_BYTES + 1)
        values[0] = reason is not None
        values[1:1 + len(data)] = np.frombuffer(data, np.uint8)
        received = self.chief_values(values)
        if not received[0]:
            return None
        return bytes(received[1:].astype(np.uint8)).rstrip(b"\0").decode("utf-8", "ignore")

    def barrier(self) -> None:
        """Wait until every worker has reached this point (no-op in one process)."""
        self.chief_values([0.0])

    @contextlib.contextmanager
    def peers_watched(self) -> Iterator[None]:
        """Around work with collectives (a fit): TensorFlow's error for a worker that died or cannot be
        reached (a long traceback) becomes a ``WorkerLostError`` naming it and saying how to resume."""
        try:
            yield
        except LOST_PEER_ERRORS as error:
            if self.workers == 1:
                raise
            raise WorkerLostError(self.lost_worker_message(error.message)) from None

    def lost_worker_message(self, error: str) -> str:
        """One line for TensorFlow's ``error`` about a lost peer: which worker (by the index of
        :attr:`index`, and its address), and that rerunning the same command resumes the run."""
        resolver = self.strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        own = (resolver.task_type, int(resolver.task_id or 0))
        order = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, [])))]
        lost = [(kind, int(i)) for kind, i in _TASK.findall(error) if (kind, int(i)) != own and (kind, int(i)) in order]
        if lost:
            kind, i = lost[0]
            who = f"worker {order.index((kind, i))} ({kind}:{i} at {spec[kind][i]})"
        else:
            who = "another worker"
        return (f"lost {who} of the multi-worker cluster: it died or cannot be reached; run the same command again "
                "on every worker to resume from the last finished epoch")
