"""Multi-worker training with real processes: MultiWorkerMirroredStrategy on loopback ports.

Each test starts its workers as separate ``python -m tfft.cli`` processes with their own
``TF_CONFIG`` (ports picked free at run time), bounds them in time and kills every process
group it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import h5py
import numpy as np
import pytest

from conftest import REPO, SAMPLE_DATA, write_tiny_checkpoint
from tfft.ownership import RUN, mark

TIMEOUT = 240


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_environments(count: int, scratch: Path) -> List[Dict[str, str]]:
    """One environment per worker: TF_CONFIG on fresh loopback ports, and a TMPDIR to inspect."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    environments = []
    for index in range(count):
        tmp = scratch / f"tmp{index}"
        tmp.mkdir(parents=True, exist_ok=True)
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        environments.append({**os.environ, "TF_CONFIG": json.dumps(config), "TMPDIR": str(tmp)})
    return environments


class Processes:
    """Started processes, each in its own process group, all killed on exit."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: List[subprocess.Popen] = []

    def start(self, name: str, args: Sequence[str], env: Dict[str, str],
              program: Sequence[str] = ("-m", "tfft.cli"), stderr_apart: bool = False) -> subprocess.Popen:
        """``stderr_apart``: stderr goes to ``NAME.err`` (see :meth:`errors`), not into the log."""
        log = open(self.log_dir / f"{name}.log", "w")
        stderr = open(self.log_dir / f"{name}.err", "w") if stderr_apart else subprocess.STDOUT
        process = subprocess.Popen([sys.executable, *program, *args], cwd=REPO, env=env, stdout=log,
                                   stderr=stderr, start_new_session=True)
        process.name = name
        self.started.append(process)
        return process

    def wait(self, processes: Sequence[subprocess.Popen], timeout: float = TIMEOUT) -> List[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"{process.name} did not finish within {timeout}s:\n{self.log(process.name)[-3000:]}")
        return codes

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def errors(self, name: str) -> str:
        return (self.log_dir / f"{name}.err").read_text()

    def kill(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


@pytest.fixture(scope="module")
def deterministic_model_dir(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-no-dropout"), dropout=0.0)


def train_args(model_dir: Path, output_dir: Path, *extra: str) -> List[str]:
    return ["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
            "--validation", str(SAMPLE_DATA / "ner_valid.txt"), "--max-validation-examples", "32",
            "--model", str(model_dir), "--output-dir", str(output_dir), "--dropout", "0.0",
            "--learning-rate", "0.001", "--no-tensorboard", *extra]


def weights(run_dir: Path) -> Dict[str, np.ndarray]:
    """A saved model's weights by name, without the per-process suffix Keras gives model names."""
    values = {}
    with h5py.File(run_dir / "model" / "tf_model.h5", "r") as file:
        file.visititems(lambda name, item: values.__setitem__(re.sub(r"(classification)_\d+", r"\1", name), item[()])
                        if isinstance(item, h5py.Dataset) else None)
    return values


def test_two_workers_train_one_run_equal_to_one_process_with_the_same_global_batch(deterministic_model_dir,
                                                                                     tmp_path):
    from tfft.cli import main

    # 16 sentences in one length bucket: an epoch is one step of the global batch, 8 rows per worker.
    options = ["--max-train-examples", "16", "--batch-size", "16", "--num-buckets", "1", "--epochs", "2"]
    shared = tmp_path / "runs" / "ner"
    environments = cluster_environments(2, tmp_path)
    with Processes(tmp_path) as processes:
        workers = [processes.start(f"worker{i}", train_args(deterministic_model_dir, shared, "--strategy",
                                                            "multi-worker", *options), env)
                   for i, env in enumerate(environments)]
        codes = processes.wait(workers)
        assert codes == [0, 0], processes.log("worker0")[-3000:] + processes.log("worker1")[-3000:]
        worker_log = processes.log("worker1")
        chief_log = processes.log("worker0")
    # Every worker logged the chief's validation scores, so both stopped alike.
    scores = [re.findall(r"val_f1: ([0-9.]+)", log) for log in (chief_log, worker_log)]
    assert len(scores[0]) == 2 and scores[0] == scores[1]
    assert sorted(p.name for p in shared.parent.iterdir()) == ["ner"]  # no .partial, no lock left
    assert sorted(p.name for p in shared.iterdir()) == [
        ".tfft", "config.yaml", "history.csv", "history.json", "labels.json", "metrics.json", "model", "reports"]
    for environment in environments:  # the non-chief's temporary directories are gone too
        assert list(Path(environment["TMPDIR"]).iterdir()) == []
    assert "the chief writes" in worker_log

    single = tmp_path / "single"
    assert main(train_args(deterministic_model_dir, single, *options)) == 0
    distributed, alone = weights(shared), weights(single)
    assert distributed.keys() == alone.keys()
    for name in alone:
        np.testing.assert_allclose(distributed[name], alone[name], atol=2e-5, err_msg=name)
    history = json.loads((shared / "history.json").read_text())
    assert history["loss"] == pytest.approx(json.loads((single / "history.json").read_text())["loss"], rel=1e-4)


@pytest.mark.slow  # the resume logic runs in test_training's interrupted fits
def test_a_killed_worker_resumes_from_the_last_finished_epoch(deterministic_model_dir, tmp_path):
    shared = tmp_path / "runs" / "ner"
    # Enough steps per epoch that the kill lands inside an epoch, not between two.
    options = ["--strategy", "multi-worker", "--batch-size", "2", "--epochs", "3", "--max-train-examples", "200"]
    # Written once the first epoch's backup is complete (the index file of BackupAndRestore's CheckpointManager).
    backup_index = shared.parent / ".ner.partial" / "backup" / "chief" / "checkpoint"
    with Processes(tmp_path) as processes:
        first = [processes.start(f"first{i}", train_args(deterministic_model_dir, shared, *options), env)
                 for i, env in enumerate(cluster_environments(2, tmp_path / "first"))]
        deadline = time.monotonic() + TIMEOUT
        while not backup_index.is_file():
            assert time.monotonic() < deadline and all(p.poll() is None for p in first), processes.log("first0")
            time.sleep(0.2)
        os.killpg(first[1].pid, signal.SIGKILL)  # worker 1 dies during epoch 2 ...
        first[1].wait()
        time.sleep(1)
        processes.kill()  # ... and the cluster is restarted, as a job scheduler would

        again = [processes.start(f"again{i}", train_args(deterministic_model_dir, shared, *options), env)
                 for i, env in enumerate(cluster_environments(2, tmp_path / "again"))]
        codes = processes.wait(again)
        assert codes == [0, 0], processes.log("again0")[-3000:] + processes.log("again1")[-3000:]
        resumed = processes.log("again0")
    assert "Resuming the unfinished run" in resumed
    assert "Epoch 1/3" not in resumed  # BackupAndRestore skipped the finished epoch
    history = json.loads((shared / "history.json").read_text())
    assert len(history["loss"]) == 3 and len(history["val_f1"]) == 3
    assert sorted(p.name for p in shared.parent.iterdir()) == ["ner"]


@pytest.mark.slow  # in process: test_workers' lost worker message
def test_a_worker_whose_peer_dies_exits_2_with_one_line_naming_it(deterministic_model_dir, tmp_path):
    shared = tmp_path / "runs" / "ner"
    options = ["--strategy", "multi-worker", "--batch-size", "2", "--epochs", "3", "--max-train-examples", "200"]
    environments = cluster_environments(2, tmp_path)
    lost_address = json.loads(environments[1]["TF_CONFIG"])["cluster"]["worker"][1]
    with Processes(tmp_path) as processes:
        workers = [processes.start(f"worker{i}", train_args(deterministic_model_dir, shared, *options), env,
                                   stderr_apart=True)
                   for i, env in enumerate(environments)]
        deadline = time.monotonic() + TIMEOUT
        while "Epoch 1/3" not in processes.log("worker0"):
            assert time.monotonic() < deadline and all(p.poll() is None for p in workers), processes.errors("worker0")
            time.sleep(0.2)
        time.sleep(2)  # among the first epoch's steps
        os.killpg(workers[1].pid, signal.SIGKILL)
        [code] = processes.wait(workers[:1], timeout=120)
        errors = processes.errors("worker0")
    assert code == 2, errors[-3000:]
    # tfft's line and nothing else: no traceback, no line of TensorFlow's multi-line native record
    [error] = errors.splitlines()
    assert error == (f"tfft train: error: lost worker 1 (worker:1 at {lost_address}) of the multi-worker cluster: it "
                     "died or cannot be reached; run the same command again on every worker to resume from the last "
                     "finished epoch")


def test_every_worker_exits_at_once_with_the_reason_the_chief_refused_to_start(deterministic_model_dir, tmp_path):
    shared = tmp_path / "runs" / "ner"
    mark(shared, RUN)  # a finished run, and no --overwrite: the chief refuses
    options = ["--strategy", "multi-worker", "--max-train-examples", "16", "--epochs", "1"]
    with Processes(tmp_path) as processes:
        workers = [processes.start(f"worker{i}", train_args(deterministic_model_dir, shared, *options), env)
                   for i, env in enumerate(cluster_environments(2, tmp_path))]
        # Not a collective timeout minutes later: the other worker ends with the chief.
        codes = processes.wait(workers, timeout=120)
        logs = [processes.log(f"worker{i}") for i in range(2)]
    assert codes == [2, 2], "\n".join(log[-2000:] for log in logs)
    assert "already holds a finished run" in logs[0]
    assert "the chief refused to start" in logs[1] and "already holds a finished run" in logs[1]


EARLY_STOPPING_SCRIPT = """
import json
import numpy as np
from tfft.backend import keras, tf
from tfft.distribution import Cluster
from tfft.training.callbacks import EarlyStoppingAfterLearning, ValidationMetrics

cluster = Cluster.create("multi-worker")
# The chief's score stops improving after epoch 2, so patience 1 ends the fit after epoch 3; the
# other worker's own score improves every epoch and would never stop it.
own_scores = iter([0.2, 0.5, 0.4, 0.3, 0.2, 0.1] if cluster.is_chief else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])

class ScriptedScores(ValidationMetrics):
    def score(self):
        return {"f1": next(own_scores)}

options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)))
with cluster.scope():
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
history = model.fit(data.batch(4).repeat().with_options(options), epochs=6, steps_per_epoch=2, verbose=0,
                    callbacks=[ScriptedScores(None, [], None),
                               EarlyStoppingAfterLearning(monitor="val_f1", mode="max", patience=1)])
print("VAL_F1", json.dumps(history.history["val_f1"]), flush=True)
"""


def test_early_stopping_stops_every_worker_at_the_chief_epoch(tmp_path):
    """Patience reached on the chief's scores ends the fit of every worker after the same epoch; a worker
    going on alone would wait forever in the next step's all-reduce."""
    with Processes(tmp_path) as processes:
        workers = [processes.start(f"worker{i}", [], env, program=("-c", EARLY_STOPPING_SCRIPT))
                   for i, env in enumerate(cluster_environments(2, tmp_path))]
        codes = processes.wait(workers, timeout=120)
        logs = [processes.log(f"worker{i}") for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
    for log in logs:
        assert re.findall(r"^VAL_F1 (.*)$", log, flags=re.M) == ["[0.2, 0.5, 0.4]"], log[-2000:]


def test_a_chief_reason_reaches_the_workers_whole():
    from tfft.distribution import Cluster

    cluster = Cluster.create("auto")  # one process: what the chief sends is what every worker gets
    assert cluster.broadcast_reason(None) is None
    assert cluster.broadcast_reason("runs/ner already holds a finished run; pass --overwrite ünïcode") == (
        "runs/ner already holds a finished run; pass --overwrite ünïcode")
    assert cluster.broadcast_reason("x" * 5000).endswith("...")  # long reasons are cut, not lost


def test_multi_worker_without_a_cluster_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from tfft.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(train_args(tmp_path / "no-model", tmp_path / "run", "--strategy", "multi-worker")) == 2
    assert "TF_CONFIG" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}')
    assert main(train_args(tmp_path / "no-model", tmp_path / "run", "--strategy", "multi-worker")) == 2
    assert "worker:3 is not in its cluster" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": 1}')
    assert main(train_args(tmp_path / "no-model", tmp_path / "run", "--strategy", "multi-worker")) == 2
    assert "TF_CONFIG is not valid" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_search_refuses_a_lease_of_zero_and_a_half_configured_cluster(tmp_path, capsys, monkeypatch):
    from tfft.cli import main

    with pytest.raises(SystemExit) as usage_error:
        main(tune_args(tmp_path / "no-model", tmp_path / "search", "--trial-lease", "0"))
    assert usage_error.value.code == 2
    assert "argument --trial-lease: must be a finite number > 0; got '0'" in capsys.readouterr().err
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    from tfft.tuning.distributed import search_role
    from tfft.errors import TfftError

    with pytest.raises(TfftError, match="KERASTUNER_ORACLE_PORT"):
        search_role()
    assert not (tmp_path / "search").exists()


def search_environments(tuner_ids: Sequence[str]) -> List[Dict[str, str]]:
    [port] = free_ports(1)
    return [{**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
             "KERASTUNER_ORACLE_PORT": str(port)} for tuner_id in tuner_ids]


def tune_args(model_dir: Path, output_dir: Path, *extra: str) -> List[str]:
    return ["tune", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
            "--validation", str(SAMPLE_DATA / "ner_valid.txt"), "--max-train-examples", "32",
            "--max-validation-examples", "16", "--model", str(model_dir), "--output-dir", str(output_dir),
            "--epochs", "1", "--batch-size", "8", "--no-tensorboard", "--tuner", "random", "--max-trials", "4",
            *extra]


def run_counts(search_dir: Path) -> Dict[str, int]:
    """How many times the chief's oracle ran each trial (KerasTuner's own record)."""
    oracle = json.loads((search_dir / "search" / "oracle.json").read_text())
    return {trial_id: int(count) for trial_id, count in oracle["run_times"].items()}


def check_search_results(search_dir: Path) -> None:
    import csv

    with open(search_dir / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and len({row["trial_id"] for row in rows}) == 4
    assert all(row["status"] == "COMPLETED" for row in rows)
    assert (search_dir / "best" / "model").is_dir() and (search_dir / "best" / "metrics.json").is_file()
    assert sorted(p.name for p in search_dir.iterdir() if p.name.startswith("trials")) == [
        "trials.csv", "trials.json", "trials.png"]


@pytest.mark.slow  # test_a_worker_killed_mid_trial_gives_its_trial_back runs this search, with a kill
def test_a_chief_and_two_workers_run_every_trial_once(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    roles = ["chief", "tuner0", "tuner1"]
    with Processes(tmp_path) as processes:
        started = [processes.start(role, tune_args(tiny_model_dir, directory), env)
                   for role, env in zip(roles, search_environments(roles))]
        codes = processes.wait(started)
        logs = {role: processes.log(role) for role in roles}
    assert codes == [0, 0, 0], "\n".join(log[-2000:] for log in logs.values())
    check_search_results(directory)
    assert set(run_counts(directory).values()) == {1}
    ran = [line for role in roles[1:] for line in logs[role].splitlines() if ": running trial" in line]
    assert len(ran) == 4  # every trial ran on a worker, once
    assert all("the chief writes the results" in logs[role] for role in roles[1:])


@pytest.mark.slow  # a start-order race between processes: no in-process form
def test_workers_that_start_before_the_chief_do_not_make_it_refuse_the_directory(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    roles = ["chief", "tuner0", "tuner1"]
    environments = dict(zip(roles, search_environments(roles)))
    with Processes(tmp_path) as processes:
        workers = [processes.start(role, tune_args(tiny_model_dir, directory), environments[role])
                   for role in roles[1:]]
        deadline = time.monotonic() + TIMEOUT
        while not (directory / "search").is_dir():  # a worker has written its part of the KerasTuner project
            assert time.monotonic() < deadline and all(p.poll() is None for p in workers), processes.log("tuner0")
            time.sleep(0.1)
        chief = processes.start("chief", tune_args(tiny_model_dir, directory), environments["chief"])
        codes = processes.wait([chief, *workers])
        log = processes.log("chief")
    assert codes == [0, 0, 0], log[-3000:]
    check_search_results(directory)


def test_a_worker_killed_mid_trial_gives_its_trial_back(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    roles = ["chief", "tuner0", "tuner1"]
    with Processes(tmp_path) as processes:
        environments = search_environments(roles)
        chief, tuner0, tuner1 = [processes.start(role, tune_args(tiny_model_dir, directory, "--trial-lease", "15"), env)
                                 for role, env in zip(roles, environments)]
        deadline = time.monotonic() + TIMEOUT
        while ": running trial" not in processes.log("tuner1"):
            assert time.monotonic() < deadline and tuner1.poll() is None, processes.log("tuner1")
            time.sleep(0.1)
        os.killpg(tuner1.pid, signal.SIGKILL)
        codes = processes.wait([chief, tuner0])
        logs = {role: processes.log(role) for role in ("chief", "tuner0")}
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs.values())
    assert "stopped renewing its lease" in logs["chief"]
    check_search_results(directory)
    assert sorted(run_counts(directory).values()) == [1, 1, 1, 2]  # the killed worker's trial ran again


@pytest.mark.slow  # in process: test_distributed_oracle's failing trials
def test_a_search_whose_trials_all_fail_ends_with_the_reason_on_the_chief_and_every_worker(tiny_model_dir, tmp_path):
    import shutil

    # The tokenizer loads (so every process starts), the weights do not (so every trial fails).
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, broken, ignore=shutil.ignore_patterns("*.h5", "*.safetensors"))
    directory = tmp_path / "search"
    roles = ["chief", "tuner0", "tuner1"]
    with Processes(tmp_path) as processes:
        # A lease of 20s: the chief serves the reason that long after the failure, for workers that start late.
        started = [processes.start(role, tune_args(broken, directory, "--max-trials", "8", "--trial-lease", "20"), env)
                   for role, env in zip(roles, search_environments(roles))]
        codes = processes.wait(started, timeout=TIMEOUT)
        logs = {role: processes.log(role) for role in roles}
    assert codes == [2, 2, 2], "\n".join(log[-2000:] for log in logs.values())
    for role in roles:
        assert re.search(r"3 trials failed in a row \(max_consecutive_failed_trials 3\): trials \d+, \d+, \d+; "
                         r"last error: \S", logs[role]), logs[role][-2000:]
    assert "tfft tune: error: the chief stopped the search" in logs["tuner0"]


@pytest.mark.slow  # in process: test_distributed_oracle's expired leases
def test_a_worker_stopped_past_its_lease_is_refused_its_trial_and_the_search_goes_on(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    roles = ["chief", "tuner0", "tuner1"]
    with Processes(tmp_path) as processes:
        chief, tuner0, tuner1 = [processes.start(role, tune_args(tiny_model_dir, directory, "--trial-lease", "10"), env)
                                 for role, env in zip(roles, search_environments(roles))]
        deadline = time.monotonic() + TIMEOUT
        while ": running trial" not in processes.log("tuner1"):
            assert time.monotonic() < deadline and tuner1.poll() is None, processes.log("tuner1")
            time.sleep(0.1)
        os.killpg(tuner1.pid, signal.SIGSTOP)  # a stalled worker (preempted VM, swapping, debugger)
        while "stopped renewing its lease" not in processes.log("chief"):
            assert time.monotonic() < deadline, processes.log("chief")
            time.sleep(0.2)
        os.killpg(tuner1.pid, signal.SIGCONT)
        codes = processes.wait([chief, tuner0, tuner1])
        logs = {role: processes.log(role) for role in roles}
    assert codes == [0, 0, 0], "\n".join(log[-2000:] for log in logs.values())
    stopped = re.search(r"tuner1: stopped trial (\d+): trial \1: this attempt's lease is over", logs["tuner1"])
    assert stopped, logs["tuner1"][-3000:]
    check_search_results(directory)
    counts = run_counts(directory)
    assert counts[stopped.group(1)] == 2 and sorted(counts.values()) == [1, 1, 1, 2]


@pytest.mark.slow  # in process: test_distributed_oracle's retry limit
def test_a_trial_that_kills_its_worker_on_every_attempt_fails_and_the_search_goes_on(tiny_model_dir, tmp_path):
    import csv

    directory = tmp_path / "search"
    roles = ["chief", "tuner0"]
    environments = dict(zip(roles, search_environments(roles)))
    args = tune_args(tiny_model_dir, directory)
    with Processes(tmp_path) as processes:
        chief = processes.start("chief", args, environments["chief"])
        for attempt in range(2):  # killed in trial 0 each time (OOM), restarted with the same tuner id
            worker = processes.start(f"tuner0-{attempt}", args, environments["tuner0"])
            deadline = time.monotonic() + TIMEOUT
            while ": running trial" not in processes.log(f"tuner0-{attempt}"):
                assert time.monotonic() < deadline and worker.poll() is None, processes.log(f"tuner0-{attempt}")
                time.sleep(0.1)
            assert "running trial 0" in processes.log(f"tuner0-{attempt}")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        worker = processes.start("tuner0-2", args, environments["tuner0"])
        codes = processes.wait([chief, worker])
        logs = {name: processes.log(name) for name in ("chief", "tuner0-2")}
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs.values())
    assert "running trial 0" not in logs["tuner0-2"]  # two attempts were all it was allowed
    with open(directory / "trials.csv", newline="") as handle:
        status = {row["trial_id"]: row["status"] for row in csv.DictReader(handle)}
    assert status == {"0": "FAILED", "1": "COMPLETED", "2": "COMPLETED", "3": "COMPLETED"}
    assert "restarted while running the trial" in logs["chief"] or "restarted while running the trial" in (
        directory / "search" / "trial_0" / "trial.json").read_text()
    assert run_counts(directory)["0"] == 2


@pytest.fixture(scope="module")
def finished_search(tiny_model_dir, tmp_path_factory) -> Path:
    """A distributed search (a chief and one worker) that ran its 2 trials and wrote its results."""
    scratch = tmp_path_factory.mktemp("finished")
    directory = scratch / "search"
    roles = ["chief", "tuner0"]
    with Processes(scratch) as processes:
        started = [processes.start(role, tune_args(tiny_model_dir, directory, "--max-trials", "2"), env)
                   for role, env in zip(roles, search_environments(roles))]
        codes = processes.wait(started)
        assert codes == [0, 0], "\n".join(processes.log(role)[-2000:] for role in roles)
    return directory


def rerun_search(model_dir: Path, finished: Path, tmp_path: Path, *extra: str) -> Dict[str, tuple]:
    """Run a chief and one worker again on a copy of ``finished``: ``{role: (exit code, log)}``."""
    import shutil

    directory = tmp_path / "search"
    shutil.copytree(finished, directory)
    roles = ["chief", "tuner0"]
    with Processes(tmp_path) as processes:
        started = [processes.start(role, tune_args(model_dir, directory, "--max-trials", "2", "--trial-lease", "20",
                                                    *extra), env)
                   for role, env in zip(roles, search_environments(roles))]
        codes = processes.wait(started, timeout=180)
        return {role: (code, processes.log(role)) for role, code in zip(roles, codes)}


@pytest.mark.slow  # in process: test_distributed_oracle's finished search, test_tuning's rerun
def test_a_finished_distributed_search_run_again_runs_no_trial_and_says_it_is_finished(tiny_model_dir, finished_search,
                                                                                      tmp_path):
    assert set(run_counts(finished_search).values()) == {1}
    results = rerun_search(tiny_model_dir, finished_search, tmp_path)
    assert [code for code, _ in results.values()] == [0, 0], "\n".join(log[-2000:] for _, log in results.values())
    chief, worker = results["chief"][1], results["tuner0"][1]
    assert "is finished: its 2 trials have ended (--max-trials 2); none is run again" in chief
    assert ": running trial" not in worker and "no trials left" in worker
    assert run_counts(tmp_path / "search") == run_counts(finished_search)  # no trial ran again


@pytest.mark.slow  # in process: test_tuning's search that cannot be resumed
def test_a_chief_refusing_another_tuner_stops_every_process_with_exit_2_and_one_line(tiny_model_dir, finished_search,
                                                                                      tmp_path):
    results = rerun_search(tiny_model_dir, finished_search, tmp_path, "--tuner", "bayesian")
    assert [code for code, _ in results.values()] == [2, 2], "\n".join(log[-2000:] for _, log in results.values())
    project = tmp_path / "search" / "search"
    reason = (f"{project / 'chief.json'}: the search in {project} was started with --tuner random; rerun with "
              "--tuner random, or pass --overwrite to discard it")
    for role, (_, log) in results.items():
        assert "Traceback" not in log and "overwrite=True" not in log, log[-3000:]
        [error] = [line for line in log.splitlines() if line.startswith("tfft tune: error:")]
        assert error == (f"tfft tune: error: {reason}" if role == "chief" else
                         f"tfft tune: error: the chief refused to start: {reason}")


@pytest.mark.slow  # in process: test_distributed_oracle's chief that cannot read its data
def test_a_chief_that_cannot_read_its_model_stops_every_worker_with_its_reason(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    missing = tmp_path / "model-not-on-the-chief"
    roles = ["chief", "tuner0"]
    environments = search_environments(roles)
    with Processes(tmp_path) as processes:
        # The chief's copy of the model is missing; the worker's is there, so only the chief can tell it.
        started = [processes.start("chief", tune_args(missing, directory, "--trial-lease", "60"), environments[0]),
                   processes.start("tuner0", tune_args(tiny_model_dir, directory, "--trial-lease", "60"),
                                   environments[1])]
        codes = processes.wait(started, timeout=150)  # not the worker's 10 minutes for a chief that never serves
        logs = [processes.log(role) for role in roles]
    assert codes == [2, 2], "\n".join(log[-2000:] for log in logs)
    [chief_error] = [line for line in logs[0].splitlines() if line.startswith("tfft tune: error:")]
    assert missing.name in chief_error
    assert f"tfft tune: error: the chief refused to start: {chief_error[len('tfft tune: error: '):]}" in logs[1]


SLOW_MODEL_WORKER = """
import sys, time
from tfft.training import fit
from tfft.tuning import distributed

distributed.CONNECT_SECONDS = 5  # the CLI's 10 minutes, shortened for the test
build = fit.create_model

def slow_build(*args, **kwargs):
    print("building the model", flush=True)
    time.sleep(120)  # a model that takes long to build, or a first step that takes long to trace
    return build(*args, **kwargs)

fit.create_model = slow_build
from tfft.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # in process: test_distributed_oracle's silent chief
def test_a_worker_outlives_a_dead_chief_by_at_most_its_bound_while_building_a_model(tiny_model_dir, tmp_path):
    directory = tmp_path / "search"
    roles = ["chief", "tuner0"]
    environments = search_environments(roles)
    args = tune_args(tiny_model_dir, directory, "--trial-lease", "4")
    with Processes(tmp_path) as processes:
        chief = processes.start("chief", args, environments[0])
        worker = processes.start("tuner0", args, environments[1], program=("-c", SLOW_MODEL_WORKER))
        deadline = time.monotonic() + TIMEOUT
        while "building the model" not in processes.log("tuner0"):
            assert time.monotonic() < deadline and worker.poll() is None, processes.log("tuner0")
            time.sleep(0.1)
        os.killpg(chief.pid, signal.SIGKILL)
        killed = time.monotonic()
        [code] = processes.wait([worker], timeout=100)
        waited = time.monotonic() - killed
        log = processes.log("tuner0")
    assert code == 2, log[-3000:]
    assert waited < 4 + 5 + 6, waited  # --trial-lease + CONNECT_SECONDS, and a few seconds to exit
    assert re.search(r"^tfft tune: error: lost the search's oracle at 127\.0\.0\.1:\d+: no answer for \d+s", log,
                     flags=re.M), log[-3000:]


FAKE_TFFT = """#!/bin/sh
python3 -c 'import json, os, sys; print(json.dumps({"env": {k: v for k, v in os.environ.items() if k.startswith(("TF_CONFIG", "KERASTUNER"))}, "args": sys.argv[1:]}))' "$@"
"""


def run_pod_script(manifest: Path, index: int, tmp_path: Path) -> dict:
    """Run a manifest's container script for one completion index, with a stand-in ``tfft``."""
    import yaml

    [job] = [d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Job"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    fake = tmp_path / "bin" / "tfft"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_TFFT)
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": str(index)}
    process = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True,
                             timeout=30, check=True)
    return {**json.loads(process.stdout), "job": job}


def test_the_kubernetes_manifests_give_every_pod_its_place_in_the_cluster(tmp_path, monkeypatch):
    from tfft.distribution import check_tf_config

    manifest = REPO / "examples" / "k8s" / "train-multi-worker.yaml"
    completions = run_pod_script(manifest, 0, tmp_path)["job"]["spec"]["completions"]
    for index in range(completions):
        pod = run_pod_script(manifest, index, tmp_path)
        config = json.loads(pod["env"]["TF_CONFIG"])
        assert config["task"] == {"type": "worker", "index": index}
        assert len(config["cluster"]["worker"]) == completions
        monkeypatch.setenv("TF_CONFIG", pod["env"]["TF_CONFIG"])
        check_tf_config()
        assert pod["args"][:1] == ["train"] and "multi-worker" in pod["args"]

    manifest = REPO / "examples" / "k8s" / "tune-distributed.yaml"
    roles = [run_pod_script(manifest, index, tmp_path)["env"]["KERASTUNER_TUNER_ID"] for index in range(3)]
    assert roles == ["chief", "tuner0", "tuner1"]
    assert run_pod_script(manifest, 1, tmp_path)["env"]["KERASTUNER_ORACLE_IP"] == "tfft-tune-0.tfft-tune"


def test_the_kubernetes_search_survives_a_trial_that_oom_kills_its_worker_and_stops_on_tfft_errors():
    import yaml

    manifest = REPO / "examples" / "k8s" / "tune-distributed.yaml"
    [job] = [d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Job"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy needs
    actions = {code: rule["action"] for rule in job["spec"]["podFailurePolicy"]["rules"]
               for code in rule.get("onExitCodes", {}).get("values", [])}
    # An OOM-killed worker (137) is replaced without using up backoffLimit: tfft counts the trial's attempts.
    assert actions[137] == "Ignore"
    assert actions[2] == "FailJob"  # tfft's own error: the search stopped, or the chief refused to start


THREE_REPLICAS_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tfft.backend import keras, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)
import yaml
from conftest import SAMPLE_DATA
from tfft.cli import main
from tfft.config import TrainConfig
from tfft.tuning import search, tune

model, out = sys.argv[2], Path(sys.argv[3])
data = ["--train", str(SAMPLE_DATA / "ner_train.txt"), "--validation", str(SAMPLE_DATA / "ner_valid.txt"),
        "--max-train-examples", "24", "--max-validation-examples", "8"]
def run(name, *extra):
    code = main(["train", "--task", "token-classification", *data, "--model", model, "--output-dir",
                 str(out / name), "--strategy", "mirrored", "--epochs", "1", "--no-tensorboard", *extra])
    saved = yaml.safe_load((out / name / "config.yaml").read_text()) if (out / name).is_dir() else None
    print("RESULT", json.dumps({"name": name, "code": code, "batch_size": saved and saved["batch_size"],
                                "left": sorted(p.name for p in out.iterdir() if p.name.startswith("." + name))}),
          flush=True)

run("default")
run("tokens", "--batch-size", "8", "--batch-tokens", "240")
run("odd_tokens", "--batch-tokens", "1000")

# tune --retrain-on-all: the trials, and the retraining fit, run under the strategy.
trial_replicas = []
class Replicas(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        trial_replicas.append(self.model.distribute_strategy.num_replicas_in_sync)

replicas = []
fit_model = search.fit_model
def recording_fit(*args, cluster, **kwargs):
    replicas.append(cluster.replicas)
    return fit_model(*args, cluster=cluster, **kwargs)
search.fit_model = recording_fit
config = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                     validation=str(SAMPLE_DATA / "ner_valid.txt"), model=model, output_dir=str(out / "search"),
                     epochs=1, batch_size=6, max_train_examples=24, max_validation_examples=8, tensorboard=False,
                     strategy="mirrored")
from tfft.tuning.options import SearchSpace, Dimension
space = SearchSpace.default(config)
import dataclasses
space = dataclasses.replace(space, batch_size=Dimension(choices=(6,)), epochs=Dimension(choices=(1,)))
result = tune(config, max_trials=1, space=space, retrain_on_all=True, callbacks=[Replicas()])
print("RESULT", json.dumps({"name": "retrain", "replicas": replicas, "trial_replicas": trial_replicas,
                            "completed": len(result.report.completed)}), flush=True)
"""


@pytest.fixture(scope="module")
def three_replica_results(tiny_model_dir, tmp_path_factory) -> Dict[str, dict]:
    # Three logical CPU devices stand for three GPUs: a count no default batch size divides.
    out = tmp_path_factory.mktemp("three")
    process = subprocess.run([sys.executable, "-c", THREE_REPLICAS_SCRIPT, str(Path(__file__).parent),
                              str(tiny_model_dir), str(out)], capture_output=True, text=True, timeout=TIMEOUT,
                             cwd=REPO)
    results = {r["name"]: r for r in (json.loads(line[len("RESULT "):]) for line in process.stdout.splitlines()
                                       if line.startswith("RESULT "))}
    results["stderr"] = process.stderr
    return results


def test_default_options_train_on_three_replicas(three_replica_results):
    default = three_replica_results["default"]
    assert default["code"] == 0, three_replica_results["stderr"][-3000:]
    assert default["batch_size"] == 9  # the default of 8 for small data, rounded up to a multiple of 3


def test_the_batch_check_under_a_strategy_uses_the_option_that_sizes_the_batches(three_replica_results):
    assert three_replica_results["tokens"]["code"] == 0, three_replica_results["stderr"][-3000:]
    refused = three_replica_results["odd_tokens"]
    assert refused["code"] == 2 and refused["left"] == []  # nothing written: no run, no work directory
    assert re.search(r"The 'batch_tokens' option .* 3 replicas; 1000 does not divide by 3 \(999 or 1002",
                     three_replica_results["stderr"])


def test_search_trials_run_under_a_strategy(three_replica_results):
    search = three_replica_results.get("retrain", {})
    assert search.get("trial_replicas") == [3] and search["completed"] == 1, three_replica_results["stderr"][-3000:]


def test_tune_retrains_on_all_data_under_the_trials_strategy(three_replica_results):
    assert three_replica_results.get("retrain", {}).get("replicas") == [3], three_replica_results["stderr"][-3000:]
