"""The distributed search's failure modes, in process: the chief's servicer called directly
(a fake gRPC context, a fake clock), and the worker's client against a real gRPC server on a
loopback port picked at run time. See ``tfft.tuning.distributed``.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import grpc
import pytest

kt = pytest.importorskip("keras_tuner")

from keras_tuner.src import protos  # noqa: E402
from keras_tuner.src.engine.trial import Trial, TrialStatus  # noqa: E402

from tfft.errors import TfftError  # noqa: E402
from tfft.tuning import distributed  # noqa: E402
from tfft.tuning.distributed import LeasedOracleServicer  # noqa: E402

LEASE = 10.0


class Refused(Exception):
    """What ``context.abort`` raises in a real gRPC server, as a test can see it."""

    def __init__(self, code, details):
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class FakeContext:
    """The parts of ``grpc.ServicerContext`` the servicer uses."""

    def __init__(self, metadata=()):
        self.metadata = tuple(metadata)
        self.trailing = ()

    def invocation_metadata(self):
        return self.metadata

    def set_trailing_metadata(self, metadata):
        self.trailing = tuple(metadata)

    def abort(self, code, details):
        raise Refused(code, details)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Worker:
    """One worker process as the chief sees it: a tuner id, a session, the leases it was given."""

    def __init__(self, servicer: LeasedOracleServicer, tuner_id: str):
        self.servicer, self.tuner_id = servicer, tuner_id
        self.session = f"{tuner_id}-{time.monotonic_ns()}"
        self.leases = {}

    def restart(self) -> None:
        self.session = f"{self.tuner_id}-{time.monotonic_ns()}"
        self.leases = {}

    def context(self, trial_id: Optional[str] = None, *extra) -> FakeContext:
        metadata = [*extra, (distributed.TUNER_KEY, self.tuner_id),
                    (distributed.SESSION_KEY, self.session)]
        if trial_id in self.leases:
            metadata.append((distributed.LEASE_KEY, self.leases[trial_id]))
        return FakeContext(metadata)

    def create_trial(self) -> Trial:
        context = self.context()
        response = self.servicer.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id=self.tuner_id), context)
        trial = Trial.from_proto(response.trial)
        self.leases.update({trial.trial_id: v for k, v in context.trailing if k == distributed.LEASE_KEY})
        return trial

    def renew(self, trial_id: str) -> Trial:
        request = protos.get_service().GetTrialRequest(trial_id=trial_id)
        return Trial.from_proto(self.servicer.GetTrial(request, self.context(trial_id)).trial)

    def update(self, trial_id: str, score: float) -> None:
        request = protos.get_service().UpdateTrialRequest(trial_id=trial_id, metrics={"score": score}, step=0)
        self.servicer.UpdateTrial(request, self.context(trial_id))

    def end(self, trial: Trial, status: str = TrialStatus.COMPLETED, message: Optional[str] = None) -> None:
        trial.status = status
        error = [(distributed.ERROR_KEY, message.encode())] if message else []
        self.servicer.EndTrial(protos.get_service().EndTrialRequest(trial=trial.to_proto()),
                               self.context(trial.trial_id, *error))

    def finish(self, trial: Trial, score: float) -> None:
        self.update(trial.trial_id, score)
        self.end(trial)


def make_oracle(directory: Path, max_trials: int = 4, reload: bool = False) -> kt.Oracle:
    hp = kt.HyperParameters()
    hp.Float("learning_rate", 1e-5, 1e-3, sampling="log")
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=max_trials,
                                           hyperparameters=hp, seed=1, max_consecutive_failed_trials=3)
    oracle._set_project_dir(str(directory), "search")
    if reload:
        oracle.reload()
    return oracle


def make_servicer(directory: Path, clock=None, **kwargs) -> LeasedOracleServicer:
    oracle = make_oracle(directory, **kwargs)
    oracle.max_retries_per_trial = 1  # as serve_oracle sets it
    options = {"clock": clock} if clock is not None else {}
    return LeasedOracleServicer(oracle, LEASE, **options)


def run_bounded(function, seconds: float):
    """Call ``function`` in a thread; fail the test (rather than hang) if it has not returned in time."""
    outcome: List = []
    thread = threading.Thread(target=lambda: outcome.append(_outcome(function)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still blocked after {seconds}s")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def _outcome(function) -> Tuple[str, object]:
    try:
        return "value", function()
    except BaseException as error:  # re-raised in the test's thread
        return "error", error


def test_a_worker_that_ends_the_last_allowed_failure_stops_the_search_without_a_deadlock(tmp_path):
    servicer = make_servicer(tmp_path, max_trials=5)
    worker, other = Worker(servicer, "tuner0"), Worker(servicer, "tuner1")
    for attempt in range(3):
        trial = run_bounded(worker.create_trial, 5)
        run_bounded(lambda: worker.end(trial, TrialStatus.FAILED, f"Traceback ...\nValueError: bad {attempt}\n"), 5)
    # Another worker's call must not block on a lock the failing EndTrial left held ...
    with pytest.raises(Refused) as refused:
        run_bounded(other.create_trial, 5)
    # ... and is told why the search stopped: the failing trials and the last error.
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "trials 0, 1, 2" in refused.value.details and "ValueError: bad 2" in refused.value.details
    assert servicer.search_over()
    # The last failed trial was saved like the others (KerasTuner raised before saving it).
    assert [Trial.load(str(tmp_path / "search" / f"trial_{i}" / "trial.json")).status for i in range(3)] == [
        TrialStatus.FAILED] * 3
    with pytest.raises(Refused) as told:
        run_bounded(worker.create_trial, 5)
    assert told.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not servicer.workers_waiting()  # both workers have been told


def test_a_worker_that_starts_after_the_search_failed_is_still_told_why(tmp_path):
    clock = FakeClock()
    servicer = make_servicer(tmp_path, clock=clock, max_trials=5)
    worker = Worker(servicer, "tuner0")
    for attempt in range(3):
        worker.end(worker.create_trial(), TrialStatus.FAILED, f"ValueError: bad {attempt}\n")
    with pytest.raises(Refused):
        worker.create_trial()
    assert not servicer.workers_waiting()  # every worker the chief has seen knows ...
    assert servicer.late_workers_may_come()  # ... but the chief serves on, for one lease
    clock.now += LEASE / 2
    with pytest.raises(Refused) as told:
        Worker(servicer, "tuner1").create_trial()  # slower to start than the three failing trials
    assert "3 trials failed in a row" in told.value.details
    clock.now += LEASE / 2
    assert not servicer.late_workers_may_come()  # then the chief may exit


def test_an_expired_lease_is_refused_to_its_first_worker_and_the_new_one_reports(tmp_path):
    clock = FakeClock()
    servicer = make_servicer(tmp_path, clock=clock)
    slow, fast = Worker(servicer, "tuner0"), Worker(servicer, "tuner1")
    trial = slow.create_trial()
    clock.now += LEASE / 2
    slow.renew(trial.trial_id)  # a renewal in time keeps the lease
    clock.now += LEASE * 0.9
    servicer.expire_leases()
    assert trial.trial_id in [t.trial_id for t in servicer.oracle.ongoing_trials.values()]
    clock.now += LEASE  # the slow worker's heartbeat is late: its trial goes to the next free worker
    servicer.expire_leases()
    again = fast.create_trial()
    assert again.trial_id == trial.trial_id
    # Everything the first worker sends about the trial is refused, with a reason it can act on.
    for call in (lambda: slow.renew(trial.trial_id), lambda: slow.update(trial.trial_id, 0.99),
                 lambda: slow.end(trial)):
        with pytest.raises(Refused) as refused:
            call()
        assert refused.value.code == grpc.StatusCode.ABORTED and "tuner1" in refused.value.details
    fast.finish(again, 0.5)
    ended = servicer.oracle.trials[trial.trial_id]
    assert ended.status == TrialStatus.COMPLETED and ended.score == 0.5  # the score of the attempt that holds it


def test_a_repeated_end_is_answered_once_and_a_late_one_after_the_trial_ended_is_refused(tmp_path):
    servicer = make_servicer(tmp_path)
    worker = Worker(servicer, "tuner0")
    trial = worker.create_trial()
    worker.finish(trial, 0.7)
    worker.end(trial)  # its first reply was lost: answered, not counted again
    assert servicer.oracle._run_times[trial.trial_id] == 1
    assert servicer.oracle.trials[trial.trial_id].status == TrialStatus.COMPLETED
    stranger = Worker(servicer, "tuner1")
    stranger.leases[trial.trial_id] = "not-a-lease"
    with pytest.raises(Refused):
        stranger.end(trial, TrialStatus.INVALID)
    assert servicer.oracle._run_times[trial.trial_id] == 1


def test_a_retried_create_trial_call_gets_the_same_lease_without_counting_an_attempt(tmp_path):
    servicer = make_servicer(tmp_path)
    worker = Worker(servicer, "tuner0")
    trial = worker.create_trial()
    lease = worker.leases[trial.trial_id]
    worker.leases.clear()  # the reply was lost; the same process asks again
    assert worker.create_trial().trial_id == trial.trial_id
    assert worker.leases[trial.trial_id] == lease and servicer.oracle._run_times[trial.trial_id] == 0


def test_a_trial_that_kills_its_worker_on_every_attempt_fails_after_the_retry_limit(tmp_path):
    servicer = make_servicer(tmp_path, max_trials=3)
    worker = Worker(servicer, "tuner0")
    first = worker.create_trial()
    worker.restart()  # OOM-killed; the restarted process has the same tuner id
    second = worker.create_trial()
    assert second.trial_id == first.trial_id and servicer.oracle._run_times[first.trial_id] == 1
    worker.restart()  # killed again: that was the last attempt allowed (max_retries_per_trial 1)
    third = worker.create_trial()
    assert third.trial_id != first.trial_id  # the search goes on
    failed = servicer.oracle.trials[first.trial_id]
    assert failed.status == TrialStatus.FAILED and "restarted" in failed.message
    assert Trial.load(str(tmp_path / "search" / f"trial_{first.trial_id}" / "trial.json")).status == TrialStatus.FAILED
    worker.finish(third, 0.3)
    assert not servicer.search_over()


def test_after_a_chief_restart_the_old_leases_are_refused_and_the_trial_is_handed_out_again(tmp_path):
    servicer = make_servicer(tmp_path)
    old = Worker(servicer, "tuner0")
    trial = old.create_trial()
    restarted = make_servicer(tmp_path, reload=True)  # the chief restarted from its project
    old.servicer = restarted
    with pytest.raises(Refused) as refused:
        old.renew(trial.trial_id)
    assert refused.value.code == grpc.StatusCode.ABORTED
    other = Worker(restarted, "tuner1")
    assert other.create_trial().trial_id == trial.trial_id
    with pytest.raises(Refused):
        old.end(trial)


# --- the worker's side, over real gRPC on loopback ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def oracle_env(monkeypatch):
    port = free_port()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    return port


def test_a_worker_gives_up_on_an_unreachable_chief_within_its_bound(tmp_path, oracle_env):
    client = distributed.PatientOracleClient(make_oracle(tmp_path), connect_seconds=2.0)
    started = time.monotonic()
    with pytest.raises(TfftError, match="lost the search's oracle"):
        run_bounded(client.get_space, 15)
    assert time.monotonic() - started < 6


class HangingCall:
    """A stub method that never answers in time (a chief that stopped responding)."""

    def __init__(self):
        self.release = threading.Event()

    def __call__(self, *args, **kwargs):
        self.release.wait(20)
        raise grpc.RpcError()

    with_call = __call__


def test_the_end_of_a_trial_does_not_wait_for_a_hanging_lease_renewal(tmp_path, oracle_env):
    client = distributed.PatientOracleClient(make_oracle(tmp_path))
    hanging = HangingCall()
    client.stub = type("Stub", (), {"GetTrial": hanging})()
    try:
        started = time.monotonic()
        with distributed.lease_renewal(client, "0", lease_seconds=0.2):
            time.sleep(0.3)  # a renewal is now under way and hangs
        assert time.monotonic() - started < 2
    finally:
        hanging.release.set()


@pytest.fixture
def served(tmp_path, oracle_env):
    """The chief's ``serve_oracle`` in a thread on a free loopback port; yields its outcome list."""
    oracle = make_oracle(tmp_path / "chief", max_trials=6)
    outcome: List = []
    thread = threading.Thread(target=lambda: outcome.append(_outcome(lambda: distributed.serve_oracle(oracle, 1.5))),
                              daemon=True)
    thread.start()
    yield oracle, outcome, thread
    thread.join(10)


def worker_client(tmp_path, tuner_id: str, monkeypatch) -> "distributed.PatientOracleClient":
    monkeypatch.setenv("KERASTUNER_TUNER_ID", tuner_id)
    return distributed.PatientOracleClient(make_oracle(tmp_path / tuner_id), connect_seconds=10)


def test_failing_trials_stop_the_search_on_the_chief_and_every_worker_with_the_reason(tmp_path, served, monkeypatch):
    oracle, outcome, chief = served
    failing, idle = worker_client(tmp_path, "tuner0", monkeypatch), worker_client(tmp_path, "tuner1", monkeypatch)
    run_bounded(idle.get_space, 15)  # a worker the chief has seen, that must be told too
    for attempt in range(3):
        trial = run_bounded(lambda: failing.create_trial("tuner0"), 15)
        trial.status, trial.message = TrialStatus.FAILED, f"Traceback ...\nResourceExhaustedError: OOM {attempt}\n"
        run_bounded(lambda: failing.end_trial(trial), 15)
    for client in (failing, idle):
        with pytest.raises(distributed.SearchStoppedError, match=r"trials 0, 1, 2; last error: ResourceExhausted"):
            run_bounded(lambda: client.create_trial(client.tuner_id), 15)
    chief.join(15)
    assert not chief.is_alive()
    assert outcome[0][0] == "error" and isinstance(outcome[0][1], distributed.SearchStoppedError)
    assert "OOM 2" in str(outcome[0][1])


def test_a_worker_whose_lease_expired_is_told_and_its_late_result_is_dropped(tmp_path, served, monkeypatch, capsys):
    oracle, outcome, chief = served
    slow, fast = worker_client(tmp_path, "tuner0", monkeypatch), worker_client(tmp_path, "tuner1", monkeypatch)
    trial = slow.create_trial("tuner0")
    lease = distributed.TrialLease(slow, trial.trial_id, lease_seconds=1.5)
    lease.check()  # confirmed: just handed out
    time.sleep(3.0)  # stalled (SIGSTOP, a long GC) past its 1.5 s lease: the chief hands the trial on
    again = fast.create_trial("tuner1")
    assert again.trial_id == trial.trial_id
    # What a training step of the resumed worker asks between batches: told, with the chief's reason.
    with pytest.raises(distributed.LeaseLostError, match="tuner1"):
        lease.raise_if_lost()
    with pytest.raises(distributed.LeaseLostError):
        slow.update_trial(trial.trial_id, {"score": 0.99})
    trial.status = TrialStatus.COMPLETED
    slow.end_trial(trial)  # dropped, not an error: the worker goes on with another trial
    assert "not reporting trial" in capsys.readouterr().out
    fast.update_trial(again.trial_id, {"score": 0.25})
    again.status = TrialStatus.COMPLETED
    fast.end_trial(again)
    assert oracle.trials[trial.trial_id].score == 0.25


class RefusingLease:
    """A lease that the chief refuses after ``good`` checks."""

    def __init__(self, good: int):
        self.good, self.checks = good, 0
        self.refusal = None

    def check(self) -> None:
        self.checks += 1
        if self.checks > self.good:
            self.refusal = distributed.LeaseLostError("trial 0: this attempt's lease is over; now leased to tuner1")
        self.raise_if_lost()

    def raise_if_lost(self) -> None:
        if self.refusal is not None:
            raise self.refusal


def test_a_fit_stops_before_its_epoch_end_writes_once_the_lease_is_lost(tmp_path):
    import numpy as np

    from tfft.backend import keras
    from tfft.tuning.tuner import LeaseGuard

    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    history = tmp_path / "history.csv"
    # Checked at the start and after each epoch's last batch: the second epoch's check refuses.
    with pytest.raises(distributed.LeaseLostError, match="tuner1"):
        model.fit(np.zeros((8, 2)), np.zeros(8), batch_size=4, epochs=3, verbose=0,
                  callbacks=[LeaseGuard(RefusingLease(good=2)), keras.callbacks.CSVLogger(str(history))])
    assert len(history.read_text().splitlines()) == 2  # the header and epoch 1: epoch 2 was never written


def test_a_chief_that_cannot_start_tells_the_workers_why_at_once(tmp_path, oracle_env, monkeypatch):
    from tfft.config import TrainConfig
    from tfft.errors import ConfigError
    from tfft.tuning import search

    def unreadable_project(*args, **kwargs):
        raise ConfigError("search/oracle.json is not a KerasTuner project")

    monkeypatch.setattr(search, "search_role", lambda: distributed.CHIEF, raising=False)  # this thread: the chief
    monkeypatch.setattr(search, "create_tuner", unreadable_project)
    chief = threading.Thread(target=lambda: _outcome(lambda: search.tune(TrainConfig(), lease_seconds=4.0)),
                             daemon=True)
    chief.start()
    client = distributed.PatientOracleClient(make_oracle(tmp_path), connect_seconds=30)
    started = time.monotonic()
    with pytest.raises(distributed.SearchStoppedError, match="refused to start: search/oracle.json is not"):
        run_bounded(lambda: client.create_trial("tuner0"), 15)
    assert time.monotonic() - started < 10  # not the 30 s a worker waits for a chief that never answers
    chief.join(15)
    assert not chief.is_alive()


# --- a finished search, a chief that refuses, a chief that goes silent ---------------------


def test_a_finished_search_resumed_runs_no_trial_again_and_tells_late_workers_it_is_over(tmp_path):
    servicer = make_servicer(tmp_path, max_trials=2)
    worker = Worker(servicer, "tuner0")
    for score in (0.4, 0.6):
        worker.finish(worker.create_trial(), score)
    # The chief stops; the same command starts it again on the project it left.
    resumed = make_oracle(tmp_path, max_trials=2, reload=True)
    assert resumed.ongoing_trials == {} and resumed._retry_queue == []  # the last trial is not queued again
    assert distributed.nothing_left(resumed)
    clock = FakeClock()
    again = LeasedOracleServicer(resumed, LEASE, clock=clock)
    assert again.search_over()  # without waiting for a worker to ask first ...
    late = Worker(again, "tuner1")
    assert late.create_trial().status == TrialStatus.STOPPED  # ... and a worker that asks is told to stop
    assert again.late_workers_may_come()  # the chief answers for one lease, then may exit
    clock.now += LEASE
    assert not again.late_workers_may_come()
    assert dict(resumed._run_times) == {"0": 1, "1": 1}


def test_a_project_left_by_an_older_chief_forgets_its_ended_trial_on_resume(tmp_path):
    import json

    servicer = make_servicer(tmp_path, max_trials=1)
    worker = Worker(servicer, "tuner0")
    trial = worker.create_trial()
    worker.finish(trial, 0.5)
    # As KerasTuner's end_trial left oracle.json (tfft 0.4.1's chief saved no more): the ended trial still ongoing.
    path = tmp_path / "search" / "oracle.json"
    state = json.loads(path.read_text())
    state["ongoing_trials"] = {"tuner0": trial.trial_id}
    path.write_text(json.dumps(state))
    resumed = make_oracle(tmp_path, max_trials=1, reload=True)
    assert resumed._retry_queue == [trial.trial_id]  # what KerasTuner's reload makes of it
    distributed.forget_ended_retries(resumed)
    assert resumed._retry_queue == [] and distributed.nothing_left(resumed)


def test_a_chief_that_cannot_read_its_data_tells_the_workers_why(tmp_path, oracle_env, monkeypatch):
    from tfft.cli import main

    client = distributed.PatientOracleClient(make_oracle(tmp_path), connect_seconds=30)  # tuner0
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")  # this process's tune command is the chief
    missing = tmp_path / "missing-train.txt"
    args = ["tune", "--verbose", "--task", "token-classification", "--train", str(missing), "--validation",
            str(missing), "--output-dir", str(tmp_path / "search"), "--trial-lease", "4"]
    outcome: List = []
    chief = threading.Thread(target=lambda: outcome.append(_outcome(lambda: main(args))), daemon=True)
    chief.start()
    started = time.monotonic()
    with pytest.raises(distributed.SearchStoppedError, match=f"refused to start: .*{missing.name}"):
        run_bounded(lambda: client.create_trial("tuner0"), 20)
    assert time.monotonic() - started < 15  # not the 30 s a worker waits for a chief that never answers
    chief.join(20)
    assert outcome == [("value", 2)]


def test_a_worker_gives_up_on_a_silent_chief_whatever_it_is_doing(tmp_path, oracle_env):
    client = distributed.PatientOracleClient(make_oracle(tmp_path), connect_seconds=30)
    reasons: List[str] = []
    started = time.monotonic()
    with client.watchdog(1.0, give_up=reasons.append):
        time.sleep(2.5)  # building a model or tracing a first step: no call to the chief meanwhile
    assert len(reasons) == 1 and "lost the search's oracle" in reasons[0]
    answered: List[str] = []
    with client.watchdog(1.0, give_up=answered.append):
        for _ in range(10):  # the chief answers (its renewals) more often than the bound
            client.answered = time.monotonic()
            time.sleep(0.25)
    assert answered == [] and time.monotonic() - started < 10
