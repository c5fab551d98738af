"""KerasTuner's distributed search (a gRPC oracle on the chief, trials on workers), made robust.

Every process runs the same ``tfft tune`` command; KerasTuner's own environment variables
give each its role: ``KERASTUNER_TUNER_ID=chief`` serves the oracle on
``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT``; ``tuner0``, ``tuner1``, ... run trials.
KerasTuner's failure modes, and what tfft does about each:

* **A worker dies in the middle of a trial**: KerasTuner would keep the trial "ongoing"
  forever and the chief would never finish. Workers here renew a lease on their trial
  (a ``GetTrial`` call every quarter lease); the chief ends a trial whose lease expired as
  invalid, which KerasTuner retries on the next free worker (``max_retries_per_trial`` 1),
  resuming its fit from the trial directory when the directory is shared. A worker restarted
  with the same tuner id gets its unfinished trial back at once.
* **Workers leaving early**: a worker asking for a trial when none is left while others
  still run is told to wait (IDLE) rather than to stop, so a trial given back by a dead
  worker still finds someone to run it. The chief exits only when every trial has ended and
  every live worker has been told to stop, so no worker is left waiting on a gone oracle.
* **gRPC errors**: workers retry calls that failed for want of a connection, with a bound;
  a repeated ``EndTrial`` (its first reply lost) or a late one from a worker whose lease
  expired is ignored, so no trial is counted twice.
* **Stale oracle copies**: a worker's local oracle is never read for results and never saved;
  only the chief writes ``trials.*`` and ``best/``, and ``--overwrite`` on a worker does not
  delete the shared project.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent import futures
from typing import Dict, Iterator

import grpc
import keras_tuner as kt
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer
from keras_tuner.src.distribute.oracle_client import OracleClient
from keras_tuner.src.engine.oracle import synchronized
from keras_tuner.src.engine.trial import TrialStatus

from tfft.errors import TfftError

CHIEF, WORKER, ALONE = "chief", "worker", "alone"
DEFAULT_LEASE_SECONDS = 120.0
# How long a worker keeps trying to reach the chief before giving up.
CONNECT_SECONDS = 600.0
RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def search_role() -> str:
    """``chief``, ``worker`` or ``alone``, from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return ALONE
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(name)]
    if missing:
        raise TfftError(f"KERASTUNER_ORACLE_IP is set for a distributed search, but {' and '.join(missing)} "
                        "is not; see README 'Scaling out'")
    return CHIEF if "chief" in os.environ["KERASTUNER_TUNER_ID"] else WORKER


def oracle_address() -> str:
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


class LeasedOracleServicer(OracleServicer):
    """KerasTuner's oracle service, with trial leases, waiting workers and idempotent ends."""

    def __init__(self, oracle: kt.Oracle, lease_seconds: float):
        super().__init__(oracle)
        self.lease_seconds = lease_seconds
        self.trial_seen: Dict[str, float] = {}
        self.tuner_seen: Dict[str, float] = {}

    def CreateTrial(self, request, context):
        self.tuner_seen[request.tuner_id] = time.monotonic()
        trial = _create_or_wait(self.oracle, request.tuner_id)
        if trial.status == TrialStatus.STOPPED:
            self.stop_triggered = True
        elif trial.status == TrialStatus.RUNNING:
            self.trial_seen[trial.trial_id] = time.monotonic()
        return protos.get_service().CreateTrialResponse(trial=trial.to_proto())

    def GetTrial(self, request, context):
        self.trial_seen[request.trial_id] = time.monotonic()  # also a worker's lease renewal
        return super().GetTrial(request, context)

    def UpdateTrial(self, request, context):
        self.trial_seen[request.trial_id] = time.monotonic()
        return super().UpdateTrial(request, context)

    def EndTrial(self, request, context):
        trial = kt.engine.trial.Trial.from_proto(request.trial)
        if not _end_if_ongoing(self.oracle, trial):
            print(f"Ignored a repeated or late end of trial {trial.trial_id}", flush=True)
        return protos.get_service().EndTrialResponse()

    def expire_leases(self) -> None:
        """End every ongoing trial whose worker has not renewed its lease in time (it is retried)."""
        now = time.monotonic()
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            if now - self.trial_seen.get(trial.trial_id, now) > self.lease_seconds:
                print(f"Trial {trial.trial_id}: {tuner_id} stopped renewing its lease; the trial is run again",
                      flush=True)
                _expire(self.oracle, tuner_id, trial.trial_id)

    def search_over(self) -> bool:
        return self.stop_triggered and not self.oracle.ongoing_trials

    def workers_waiting(self) -> bool:
        """Whether a live worker has not yet been told that the search is over."""
        now = time.monotonic()
        return any(now - self.tuner_seen.get(t, 0.0) < self.lease_seconds for t in self.oracle.tuner_ids)


@synchronized
def _create_or_wait(oracle: kt.Oracle, tuner_id: str):
    """``oracle.create_trial``, except that a worker is told to wait (IDLE) while others still run trials."""
    trial = oracle.create_trial(tuner_id)
    others_running = any(t != tuner_id for t in oracle.ongoing_trials)
    if trial.status == TrialStatus.STOPPED and others_running:
        oracle.tuner_ids.add(tuner_id)  # create_trial forgot it on STOPPED; it is still a worker of the search
        return kt.engine.trial.Trial(oracle.get_space(), trial_id=trial.trial_id, status=TrialStatus.IDLE)
    return trial


@synchronized
def _end_if_ongoing(oracle: kt.Oracle, trial) -> bool:
    if all(t.trial_id != trial.trial_id for t in oracle.ongoing_trials.values()):
        return False
    oracle.end_trial(trial)
    return True


@synchronized
def _expire(oracle: kt.Oracle, tuner_id: str, trial_id: str) -> None:
    if oracle.ongoing_trials.get(tuner_id) is None or oracle.ongoing_trials[tuner_id].trial_id != trial_id:
        return
    trial = oracle.trials[trial_id]
    trial.status = TrialStatus.INVALID
    trial.message = f"{tuner_id} stopped renewing its lease on the trial (the worker died or lost the chief)"
    oracle.end_trial(trial)
    oracle.tuner_ids.discard(tuner_id)


def serve_oracle(oracle: kt.Oracle, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
    """Serve ``oracle`` to the workers until the search is over and every live worker knows it."""
    oracle.max_retries_per_trial = max(oracle.max_retries_per_trial, 1)  # a trial given back is run again
    servicer = LeasedOracleServicer(oracle, lease_seconds)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(oracle_address()):
        raise TfftError(f"cannot serve the oracle on {oracle_address()} (KERASTUNER_ORACLE_IP/PORT): address in use?")
    server.start()
    print(f"Serving the search's oracle on {oracle_address()}", flush=True)
    try:
        while not servicer.search_over():
            time.sleep(0.5)
            servicer.expire_leases()
        while servicer.workers_waiting():
            time.sleep(0.5)
    finally:
        server.stop(grace=2)


class PatientOracleClient(OracleClient):
    """KerasTuner's worker-side client, retrying calls that failed for want of the chief (bounded),
    and waiting a moment before asking again when told to wait."""

    def __init__(self, oracle: kt.Oracle, connect_seconds: float = CONNECT_SECONDS):
        super().__init__(oracle)
        self.connect_seconds = connect_seconds
        for name in ("get_space", "update_space", "update_trial", "end_trial", "get_trial", "get_best_trials"):
            setattr(self, name, self._retrying(getattr(super(), name)))

    def create_trial(self, tuner_id):
        trial = self._retrying(super().create_trial)(tuner_id)
        if trial.status == TrialStatus.IDLE:
            time.sleep(1.0)
        return trial

    def _retrying(self, call):
        def retried(*args, **kwargs):
            deadline = time.monotonic() + self.connect_seconds
            while True:
                try:
                    return call(*args, **kwargs)
                except grpc.RpcError as error:
                    if error.code() not in RETRIED_CODES or time.monotonic() > deadline:
                        raise TfftError(f"lost the search's oracle at {oracle_address()}: {error.code().name}; "
                                        f"is the chief (KERASTUNER_TUNER_ID=chief) running?") from None
                    time.sleep(1.0)
        return retried


@contextlib.contextmanager
def lease_renewal(oracle, trial_id: str, lease_seconds: float) -> Iterator[None]:
    """On a worker, renew the lease on ``trial_id`` every quarter lease while the trial runs."""
    if not isinstance(oracle, OracleClient):
        yield
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 4):
            with contextlib.suppress(TfftError, grpc.RpcError):
                oracle.get_trial(trial_id)

    thread = threading.Thread(target=renew, name=f"lease-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def patient_client(client: OracleClient) -> PatientOracleClient:
    """KerasTuner's worker client (``BaseTuner`` makes one) as a :class:`PatientOracleClient`."""
    return PatientOracleClient(client._oracle)
