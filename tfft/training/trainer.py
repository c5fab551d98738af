"""``train``: one fine-tuning run, from options to a finished run directory.

The steps live in modules of their own: the run directory's lock and resume key
(:mod:`tfft.training.lifecycle`), the data (:mod:`tfft.training.data`), the model
(:mod:`tfft.training.model`), the fit and its callbacks (:mod:`tfft.training.fit`) and what a
finished run writes (:mod:`tfft.training.artifacts`). The run's :class:`~tfft.distribution.Cluster`
is built once here and passed down.

A run works in a hidden sibling directory and becomes the run directory only when everything
is written; running the same command after a crash resumes from the last finished epoch
(``BackupAndRestore``, with the early-stopping state), and a finished run directory is replaced
only with ``overwrite``, and only when tfft made it (:mod:`tfft.ownership`); ``--output-dir`` is
resolved first, so ``.``, ``x/`` and a symlink name the directory itself.

Under a multi-worker strategy every worker runs ``train`` with the same options and keeps only
its share of the training rows. The chief does all of the above; the other workers write
nothing that outlives them, resume from the chief's ``BackupAndRestore`` state and meet the
chief at barriers: after it has claimed the work directory, and before it moves the work
directory onto the run directory. The first barrier carries the chief's decision: when it
refuses to start (a finished run without ``overwrite``, the lock held, other options), every
worker stops at once with the chief's reason.
"""

from __future__ import annotations

import contextlib
import time
from typing import Optional

from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.errors import ConfigError
from tfft.ownership import RUN, check_owned, resolved
from tfft.training.artifacts import TrainResult, scores_of_epoch, write_run
from tfft.training.data import prepare_data
from tfft.training.fit import fit_model
from tfft.training.lifecycle import claim_work_dir, refuse_data_inside, run_lock
from tfft.training.timing import Stopwatch


def train(config: TrainConfig, overwrite: bool = False, stopwatch: Optional[Stopwatch] = None) -> TrainResult:
    """Fine-tune per ``config`` and write the run directory; see the module docstring.

    ``overwrite`` replaces a finished run directory and discards an unfinished run of the
    same directory instead of resuming it. ``config`` is left as given: the run trains with, and
    records, the copy :func:`~tfft.training.data.prepare_data` resolves for the data. ``stopwatch``
    (the CLI's, which has timed the process's start-up) receives the seconds of each phase of the run.
    """
    started = time.time()
    stopwatch = stopwatch or Stopwatch()
    config.validate()
    cluster = Cluster.of(config)
    run_dir = resolved(config.run_dir)  # `.`, `x/`, a symlink: the directory itself, on every worker
    with contextlib.ExitStack() as claimed:
        try:
            if cluster.is_chief:
                check_owned(config.run_dir, RUN)  # a file in the way, a link loop: refused before the lock beside it
                claimed.enter_context(run_lock(run_dir))
                if check_owned(config.run_dir, RUN) and not overwrite:
                    raise ConfigError(f"{config.run_dir} already holds a finished run; pass --overwrite to replace "
                                      "it, or choose another --output-dir")
                # --overwrite deletes it and a finished run renames it: refuse one tfft did not make, or a link
                check_owned(cluster.work_dir(run_dir), RUN, follow_link=False)
                refuse_data_inside(config, config.run_dir)
            with stopwatch.phase("data"):
                data = prepare_data(config, cluster.replicas)
            config = data.config  # resolved for the data, and frozen: what config.yaml and the resume key hold
            if cluster.is_chief:
                print(f"Training {config.task} on {len(data.train_examples)} examples ({data.encoding.num_truncated} "
                      f"truncated to {config.max_length} tokens), {len(data.label_map)} labels", flush=True)
            data = data.worker_share(cluster)  # refuses a cluster with more workers than rows
            if cluster.is_chief:
                claim_work_dir(cluster.work_dir(run_dir), config, overwrite)
        except Exception as error:
            if cluster.is_chief:
                with contextlib.suppress(Exception):  # a failed broadcast must not hide the reason itself
                    cluster.broadcast_reason(str(error) or type(error).__name__)  # the other workers stop with it
            raise
        refusal = cluster.broadcast_reason(None)  # after it, the other workers may read the backup state
        if refusal is not None:
            raise ConfigError(f"the chief refused to start: {refusal}")
        work_dir = cluster.work_dir(run_dir)
        model, best_epoch, history = fit_model(config, data, work_dir, backup_dir=cluster.backup_dir(run_dir),
                                               cluster=cluster, stopwatch=stopwatch)
        cluster.barrier()  # every worker is done with the work directory
        if cluster.is_chief:
            return write_run(config, data, model, work_dir, best_epoch, history, started, stopwatch)
    print(f"Worker done; the chief writes {run_dir}", flush=True)
    return TrainResult(run_dir, best_epoch, scores_of_epoch(history, best_epoch), history,
                       data.encoding.num_truncated, time.time() - started)
