"""KerasTuner's distributed search (a gRPC oracle on the chief, trials on workers), made robust.

Every process runs the same ``tfft tune`` command; KerasTuner's own environment variables
give each its role: ``KERASTUNER_TUNER_ID=chief`` serves the oracle on
``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT``; ``tuner0``, ``tuner1``, ... run trials.
KerasTuner's failure modes, and what tfft does about each:

* **A lease belongs to one worker and one attempt.** Handing out a trial gives its worker a
  lease (a token sent back in the reply's metadata); the worker sends it with every call
  about the trial and renews it with a ``GetTrial`` every quarter lease. The chief refuses
  (``ABORTED``) a renewal, update or end that does not carry the trial's current lease: after
  the lease expired (a slow or stopped worker), or after a chief restart. A refused worker
  stops that trial's fit, writes nothing more into its directory (it also confirms the lease
  before each epoch's writes and before saving the trial's weights), drops its result and
  asks for another trial, so the score the chief records is always that of the weights in
  the trial directory.
* **A worker dies in the middle of a trial**: it stops renewing; after ``lease_seconds`` the
  chief ends the trial as invalid, which KerasTuner retries on the next free worker
  (``max_retries_per_trial`` 1), resuming its fit from the trial directory. A worker
  restarted with the same tuner id (a new process: its session id differs) that asks for a
  trial while it still holds one was killed in it (out of memory, preempted): that attempt is
  counted the same way, so a trial that kills its worker every time ends FAILED after its
  retries and the search goes on.
* **Failing trials**: KerasTuner's ``synchronized`` lock has no ``try/finally`` and its
  ``end_trial`` raises before saving the trial when ``max_consecutive_failed_trials`` is
  reached, which would leave the chief's lock held for ever. The servicer takes the lock
  itself (released whatever happens), checks the limit after the trial is saved, and then
  refuses every call (``FAILED_PRECONDITION``) with a message naming the failing trials and the
  last error: each worker exits non-zero with it (running trials stop at their next renewal),
  and the chief, once every live worker has been told and one lease has passed (for workers
  that start late), raises it.
* **A chief that cannot start** (it fails before serving: options, its data or model, a project
  it cannot resume) answers every worker's call with its reason for ``lease_seconds``
  (``workers_told_of_failure``), so the workers exit at once with it.
* **A finished search resumed**: KerasTuner's ``end_trial`` saves ``oracle.json`` before it drops
  the trial from ``ongoing_trials``, and its ``reload`` queues every trial listed there to run
  again. The servicer saves again after each end, and a reload forgets queued trials that had
  ended (``forget_ended_retries``, for projects written before). A chief that finds nothing left
  tells the workers so (STOPPED) for ``lease_seconds`` instead of waiting for one to ask.
* **Workers leaving early**: a worker asking for a trial when none is left while others
  still run is told to wait (IDLE) rather than to stop, so a trial given back by a dead
  worker still finds someone to run it. The chief exits only when every trial has ended and
  every live worker has been told to stop, so no worker is left waiting on a gone oracle.
* **Bounded waits**: each call to the chief waits at most ``CALL_SECONDS``; calls that failed
  for want of the chief are retried until ``CONNECT_SECONDS`` after the call began, then the
  worker exits with an error. A lease renewal is one call of at most a quarter lease, and
  ending a trial never waits for it. Whatever the worker is doing (building a model, tracing a
  first step), a watch exits it once the chief has not answered for ``lease_seconds +
  CONNECT_SECONDS`` (``PatientOracleClient.watchdog``). A repeated ``EndTrial`` (its first
  reply lost) is answered without counting the trial twice, and a repeated ``CreateTrial`` from
  the same process gets the same trial and lease.
* **Stale oracle copies**: a worker's local oracle is never read for results and never saved;
  only the chief writes ``trials.*`` and ``best/``, and ``--overwrite`` on a worker does not
  delete the shared project.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set

import grpc
import keras_tuner as kt
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer
from keras_tuner.src.distribute.oracle_client import OracleClient
from keras_tuner.src.engine import hyperparameters as hp_module
from keras_tuner.src.engine.oracle import LOCKS, THREADS, synchronized
from keras_tuner.src.engine.trial import Trial, TrialStatus
from keras_tuner.src.errors import FatalError

from tfft.errors import TfftError

CHIEF, WORKER, ALONE = "chief", "worker", "alone"
DEFAULT_LEASE_SECONDS = 120.0
# How long a worker keeps trying to reach the chief, from the start of a call, before giving up.
CONNECT_SECONDS = 600.0
# The longest one call to the chief may take (a Bayesian oracle's CreateTrial fits a model).
CALL_SECONDS = 60.0
RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# gRPC metadata: who calls (tuner id, and a session id per worker process), the lease it holds,
# and a failed trial's error (KerasTuner's Trial proto has no field for it).
TUNER_KEY, SESSION_KEY, LEASE_KEY, ERROR_KEY = "tfft-tuner-id", "tfft-session", "tfft-lease", "tfft-error-bin"
ERROR_BYTES = 4000  # the end of a traceback, well inside gRPC's 8 KiB of metadata


class SearchStoppedError(TfftError, FatalError):
    """The chief stopped the search (too many failed trials): every process exits with its reason.

    A KerasTuner ``FatalError``, so a worker's trial loop does not swallow it as a trial's failure."""


class LeaseLostError(TfftError):
    """The chief no longer counts this worker's attempt at a trial (its lease expired, or the
    chief restarted): the worker stops the trial and drops its result."""


def search_role() -> str:
    """``chief``, ``worker`` or ``alone``, from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return ALONE
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(name)]
    if missing:
        raise TfftError(f"KERASTUNER_ORACLE_IP is set for a distributed search, but {' and '.join(missing)} "
                        "is not; see docs/scaling.md")
    return CHIEF if "chief" in os.environ["KERASTUNER_TUNER_ID"] else WORKER


def oracle_address() -> str:
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


@contextlib.contextmanager
def oracle_lock(oracle: kt.Oracle) -> Iterator[None]:
    """KerasTuner's lock on ``oracle`` (the one ``@synchronized`` takes), released whatever happens.

    Calls of synchronized oracle methods inside are nested calls of the same thread and do not
    take it again, so an exception inside (KerasTuner's own included) cannot leave it held."""
    name = threading.current_thread().name
    if THREADS[oracle] == name:
        yield
        return
    LOCKS[oracle].acquire()
    THREADS[oracle] = name
    try:
        yield
    finally:
        THREADS[oracle] = None
        LOCKS[oracle].release()


@dataclass
class Lease:
    """A worker's hold on one attempt at a trial."""

    tuner_id: str
    session: str
    token: str
    renewed: float


class LeasedOracleServicer(OracleServicer):
    """KerasTuner's oracle service, with trial leases, counted restarts, waiting workers,
    idempotent calls and a clean stop after too many failed trials (see the module docstring).
    Every method holds the oracle's lock for its whole work."""

    def __init__(self, oracle: kt.Oracle, lease_seconds: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(oracle)
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.leases: Dict[str, Lease] = {}  # trial id -> its current lease
        self.ended_leases: Set[str] = set()  # leases whose trial ended (a repeated EndTrial is answered)
        self.tuner_seen: Dict[str, float] = {}
        self.told_stopped: Set[str] = set()
        self.failure: Optional[str] = None  # why the search stopped, once too many trials failed
        # When the chief learned that the search is over before every worker could ask: too many trials
        # failed, or it found the search finished when it started.
        self.over_at: Optional[float] = self.clock() if nothing_left(oracle) else None

    # --- gRPC methods ---------------------------------------------------------------------

    def GetSpace(self, request, context):
        with self._serving(context):
            return super().GetSpace(request, context)

    def UpdateSpace(self, request, context):
        with self._serving(context):
            return super().UpdateSpace(request, context)

    def GetBestTrials(self, request, context):
        with self._serving(context):
            return super().GetBestTrials(request, context)

    def CreateTrial(self, request, context):
        with self._serving(context):
            tuner_id, session = request.tuner_id, _metadata(context).get(SESSION_KEY, "")
            held = self.oracle.ongoing_trials.get(tuner_id)
            lease = self.leases.get(held.trial_id) if held is not None else None
            if lease is not None and lease.session == session:  # a retried call: its reply was lost
                trial = held
            else:
                if held is not None:
                    print(f"Trial {held.trial_id}: {tuner_id} restarted while running it; that attempt counts as "
                          "failed", flush=True)
                    self._end_attempt(tuner_id, held.trial_id, f"{tuner_id} restarted while running the trial "
                                      "(was it killed, e.g. out of memory, or preempted?)")
                    self._refuse_if_stopped(context, tuner_id)
                trial = _create_or_wait(self.oracle, tuner_id)
                if trial.status == TrialStatus.RUNNING:
                    lease = Lease(tuner_id, session, uuid.uuid4().hex, self.clock())
                    self.leases[trial.trial_id] = lease
            if trial.status == TrialStatus.STOPPED:
                self.stop_triggered = True
            elif trial.status == TrialStatus.RUNNING:
                context.set_trailing_metadata(((LEASE_KEY, lease.token),))
            return protos.get_service().CreateTrialResponse(trial=trial.to_proto())

    def GetTrial(self, request, context):
        with self._serving(context):
            if LEASE_KEY in _metadata(context):  # a worker's renewal of its lease
                self._hold(context, request.trial_id).renewed = self.clock()
            return protos.get_service().GetTrialResponse(trial=self.oracle.get_trial(request.trial_id).to_proto())

    def UpdateTrial(self, request, context):
        with self._serving(context):
            self._hold(context, request.trial_id).renewed = self.clock()
            trial = self.oracle.update_trial(request.trial_id, request.metrics, step=request.step)
            return protos.get_service().UpdateTrialResponse(trial=trial.to_proto())

    def EndTrial(self, request, context):
        token = _metadata(context).get(LEASE_KEY)
        with self._serving(context, refuse_when_stopped=token not in self.ended_leases):
            trial = Trial.from_proto(request.trial)
            if token in self.ended_leases:
                print(f"Trial {trial.trial_id}: a repeated end, already counted", flush=True)
            else:
                self._hold(context, trial.trial_id)
                error = _metadata(context).get(ERROR_KEY)
                if error:
                    trial.message = error.decode("utf-8", "replace")
                del self.leases[trial.trial_id]
                self.ended_leases.add(token)
                self._end(trial)
            return protos.get_service().EndTrialResponse()

    # --- the chief's loop -----------------------------------------------------------------

    def expire_leases(self) -> None:
        """End every ongoing trial whose worker has not renewed its lease in time (it is retried)."""
        with oracle_lock(self.oracle):
            now = self.clock()
            for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
                lease = self.leases.get(trial.trial_id)
                if lease is None:  # handed out before this servicer existed: start its clock now
                    self.leases[trial.trial_id] = Lease(tuner_id, "", uuid.uuid4().hex, now)
                elif now - lease.renewed > self.lease_seconds:
                    print(f"Trial {trial.trial_id}: {tuner_id} stopped renewing its lease; the trial is run again",
                          flush=True)
                    self._end_attempt(tuner_id, trial.trial_id, f"{tuner_id} stopped renewing its lease on the "
                                      "trial (the worker died, stalled or lost the chief)")
                    self.oracle.tuner_ids.discard(tuner_id)

    def search_over(self) -> bool:
        return (self.failure is not None or self.over_at is not None
                or (self.stop_triggered and not self.oracle.ongoing_trials))

    def late_workers_may_come(self) -> bool:
        """Whether the search ended (trials failed, or it was finished before the chief started) less
        than a lease ago: a worker slower to start, which the chief has never seen, may still call, and
        must be told rather than wait ``CONNECT_SECONDS`` for a chief that has gone."""
        return self.over_at is not None and self.clock() - self.over_at < self.lease_seconds

    def workers_waiting(self) -> bool:
        """Whether a live worker has not yet been told that the search is over."""
        now = self.clock()
        if self.failure is not None:
            waiting = set(self.tuner_seen) - self.told_stopped
        else:
            waiting = set(self.oracle.tuner_ids)
        return any(now - self.tuner_seen.get(t, float("-inf")) < self.lease_seconds for t in waiting)

    # --- helpers (called with the lock held) ----------------------------------------------

    @contextlib.contextmanager
    def _serving(self, context, refuse_when_stopped: bool = True) -> Iterator[None]:
        with oracle_lock(self.oracle):
            tuner_id = _metadata(context).get(TUNER_KEY, "")
            if tuner_id:
                self.tuner_seen[tuner_id] = self.clock()
            if refuse_when_stopped:
                self._refuse_if_stopped(context, tuner_id)
            yield

    def _refuse_if_stopped(self, context, tuner_id: str) -> None:
        if self.failure is not None:
            self.told_stopped.add(tuner_id)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the chief stopped the search: {self.failure}")

    def _hold(self, context, trial_id: str) -> Lease:
        """The caller's lease on ``trial_id``, or refuse the call (ABORTED) with the reason."""
        lease = self.leases.get(trial_id)
        if lease is None or lease.token != _metadata(context).get(LEASE_KEY):
            holder = (f"it is now leased to {lease.tuner_id}" if lease is not None
                      else "it is no longer running" if trial_id not in self.oracle.trials
                      or self.oracle.trials[trial_id].status != TrialStatus.RUNNING
                      else "it is waiting to be run again")
            context.abort(grpc.StatusCode.ABORTED,
                          f"trial {trial_id}: this attempt's lease is over (it expired, or the chief restarted); "
                          f"{holder}")
        return lease

    def _end_attempt(self, tuner_id: str, trial_id: str, message: str) -> None:
        """End the attempt ``tuner_id`` holds at ``trial_id`` as invalid (KerasTuner retries it, or fails it)."""
        self.leases.pop(trial_id, None)
        trial = self.oracle.trials[trial_id]
        trial.status, trial.message = TrialStatus.INVALID, message
        self._end(trial)

    def _end(self, trial) -> None:
        """``oracle.end_trial``, then the consecutive-failure check that KerasTuner does before saving."""
        oracle = self.oracle
        limit = oracle.max_consecutive_failed_trials
        oracle.max_consecutive_failed_trials = None  # no KerasTuner check (it raises before saving the trial)
        try:
            oracle.end_trial(trial)
        finally:
            oracle.max_consecutive_failed_trials = limit
        oracle.save()  # end_trial saved before dropping the trial from ongoing_trials: a resume would rerun it
        failed = _trailing_failures(oracle)
        if limit and len(failed) >= limit and self.failure is None:
            last = (oracle.trials[failed[-1]].message or "").strip().splitlines()
            self.failure = (f"{len(failed)} trials failed in a row "
                            f"(max_consecutive_failed_trials {limit}): trials {', '.join(failed)}; last error: "
                            f"{last[-1] if last else 'unknown'}")
            self.over_at = self.clock()
            print(self.failure, flush=True)


def _metadata(context) -> Dict[str, str]:
    return dict(context.invocation_metadata() or ())


def _trailing_failures(oracle: kt.Oracle) -> List[str]:
    """The ids of the trials that failed last, in a row (in the order they ended)."""
    failed: List[str] = []
    for trial_id in reversed(oracle.end_order):
        if oracle.trials[trial_id].status != TrialStatus.FAILED:
            break
        failed.insert(0, trial_id)
    return failed


def nothing_left(oracle: kt.Oracle) -> bool:
    """Whether the search is finished: ``max_trials`` trials were created and none is running or
    waiting to be run again (a resumed search that is finished runs no trial)."""
    return (not oracle.ongoing_trials and not oracle._retry_queue and bool(oracle.max_trials)
            and len(oracle.trials) >= oracle.max_trials)


def forget_ended_retries(oracle: kt.Oracle) -> None:
    """Drop, from a reloaded oracle's retry queue, the trials that had ended.

    KerasTuner 1.4.8's ``end_trial`` saves ``oracle.json`` before it drops the trial from
    ``ongoing_trials``, and ``reload`` queues every trial found there to run again: a search whose
    chief ended its last trial that way (tfft 0.4.1 and earlier), or that stopped between the two, would
    run an ended trial a second time."""
    ended = set(oracle.end_order)
    oracle._retry_queue = [trial_id for trial_id in oracle._retry_queue if trial_id not in ended]


@synchronized
def _create_or_wait(oracle: kt.Oracle, tuner_id: str):
    """``oracle.create_trial``, except that a worker is told to wait (IDLE) while others still run trials."""
    trial = oracle.create_trial(tuner_id)
    others_running = any(t != tuner_id for t in oracle.ongoing_trials)
    if trial.status == TrialStatus.STOPPED and others_running:
        oracle.tuner_ids.add(tuner_id)  # create_trial forgot it on STOPPED; it is still a worker of the search
        return Trial(oracle.get_space(), trial_id=trial.trial_id, status=TrialStatus.IDLE)
    return trial


def serve_oracle(oracle: kt.Oracle, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
    """Serve ``oracle`` to the workers until the search is over and every live worker knows it.

    Raises ``SearchStoppedError`` when too many trials failed in a row (after telling the workers)."""
    oracle.max_retries_per_trial = max(oracle.max_retries_per_trial, 1)  # a trial given back is run again
    servicer = LeasedOracleServicer(oracle, lease_seconds)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(oracle_address()):
        raise TfftError(f"cannot serve the oracle on {oracle_address()} (KERASTUNER_ORACLE_IP/PORT): address in use?")
    server.start()
    if servicer.over_at is not None:
        print(f"Telling the search's workers on {oracle_address()}, for {lease_seconds:.0f}s, that the search is "
              "finished", flush=True)
    else:
        print(f"Serving the search's oracle on {oracle_address()}", flush=True)
    try:
        while not servicer.search_over():
            time.sleep(0.5)
            servicer.expire_leases()
        while servicer.workers_waiting() or servicer.late_workers_may_come():
            time.sleep(0.5)
    finally:
        server.stop(grace=2)
    if servicer.failure is not None:
        raise SearchStoppedError(f"the search stopped: {servicer.failure}")


class _Refusal(grpc.GenericRpcHandler):
    """Answers every call with FAILED_PRECONDITION and ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason

    def service(self, handler_call_details):
        def refuse(request, context):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.reason)

        return grpc.unary_unary_rpc_method_handler(refuse)


def refuse_workers(reason: str, seconds: float) -> None:
    """On a chief that cannot start the search: answer every worker's call with ``reason`` for
    ``seconds``, so the workers exit at once with it instead of waiting ``CONNECT_SECONDS`` for an
    oracle that will never come."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_Refusal(f"the chief refused to start: {reason}"),))
    if not server.add_insecure_port(oracle_address()):
        return  # something else serves there; nothing to tell
    server.start()
    print(f"Telling the search's workers, for {seconds:.0f}s, that the chief refused to start", flush=True)
    try:
        time.sleep(seconds)
    finally:
        server.stop(grace=1)


@contextlib.contextmanager
def workers_told_of_failure(role: str, lease_seconds: float) -> Iterator[None]:
    """On the chief (``role``), an error raised inside, before the search is served (options,
    data, model, an existing project that cannot be resumed), is first told to every worker for
    ``lease_seconds`` (``refuse_workers``), then raised; elsewhere nothing."""
    try:
        yield
    except Exception as error:
        if role == CHIEF:
            text = str(error).strip()
            refuse_workers(text.splitlines()[0] if text else type(error).__name__, lease_seconds)
        raise


class PatientOracleClient(OracleClient):
    """KerasTuner's worker-side client with bounded waits: each call at most ``CALL_SECONDS``, retried
    while the chief cannot be reached until ``connect_seconds`` after it began. It sends the worker's
    tuner id, session and leases with its calls, and turns the chief's refusals into
    ``SearchStoppedError`` (exit) and ``LeaseLostError`` (drop the trial)."""

    def __init__(self, oracle: kt.Oracle, connect_seconds: float = CONNECT_SECONDS):
        super().__init__(oracle)
        self.connect_seconds = connect_seconds
        self.address = oracle_address()
        self.session = uuid.uuid4().hex
        self.leases: Dict[str, str] = {}  # trial id -> lease token
        self.answered = time.monotonic()  # when the chief last answered a call (a refusal is an answer)

    @contextlib.contextmanager
    def watchdog(self, silence_seconds: float, give_up: Optional[Callable[[str], None]] = None) -> Iterator[None]:
        """While inside, give up on the chief once it has not answered for ``silence_seconds``, whatever
        this process is doing meanwhile (building a trial's model, tracing its first step, training,
        waiting on a call): ``give_up`` gets the reason; by default it prints it and exits the process
        with code 2. A live chief answers a worker at least every quarter lease (its renewals) or call."""
        give_up = give_up or _exit_lost
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(max(0.05, min(1.0, self.answered + silence_seconds - time.monotonic()))):
                silent = time.monotonic() - self.answered
                if silent > silence_seconds:
                    give_up(f"lost the search's oracle at {self.address}: no answer for {silent:.0f}s; is the "
                            "chief (KERASTUNER_TUNER_ID=chief) running?")
                    return

        threading.Thread(target=watch, name="chief-watchdog", daemon=True).start()
        try:
            yield
        finally:
            stop.set()

    def get_space(self):
        response = self._call("GetSpace", protos.get_service().GetSpaceRequest())
        return hp_module.HyperParameters.from_proto(response.hyperparameters)

    def update_space(self, hyperparameters):
        self._call("UpdateSpace", protos.get_service().UpdateSpaceRequest(hyperparameters=hyperparameters.to_proto()))

    def create_trial(self, tuner_id):
        response, call = self._call("CreateTrial", protos.get_service().CreateTrialRequest(tuner_id=tuner_id),
                                    with_call=True)
        trial = Trial.from_proto(response.trial)
        for key, value in call.trailing_metadata() or ():
            if key == LEASE_KEY:
                self.leases[trial.trial_id] = value
        if trial.status == TrialStatus.IDLE:
            time.sleep(1.0)
        return trial

    def update_trial(self, trial_id, metrics, step=0):
        response = self._call("UpdateTrial", protos.get_service().UpdateTrialRequest(
            trial_id=trial_id, metrics=metrics, step=step), trial_id=trial_id)
        return Trial.from_proto(response.trial)

    def end_trial(self, trial):
        try:
            error = [(ERROR_KEY, trial.message.encode()[-ERROR_BYTES:])] if trial.message else []
            self._call("EndTrial", protos.get_service().EndTrialRequest(trial=trial.to_proto()),
                       trial_id=trial.trial_id, metadata=error)
        except LeaseLostError as error:
            print(f"{self.tuner_id}: not reporting trial {trial.trial_id}: {error}", flush=True)
        finally:
            self.leases.pop(trial.trial_id, None)

    def get_trial(self, trial_id):
        response = self._call("GetTrial", protos.get_service().GetTrialRequest(trial_id=trial_id), trial_id=trial_id)
        return Trial.from_proto(response.trial)

    def get_best_trials(self, num_trials=1):
        response = self._call("GetBestTrials", protos.get_service().GetBestTrialsRequest(num_trials=num_trials))
        return [Trial.from_proto(trial) for trial in response.trials]

    def renew(self, trial_id: str, timeout: float) -> None:
        """One renewal of the lease on ``trial_id``, waiting at most ``timeout`` (no retry)."""
        self._call("GetTrial", protos.get_service().GetTrialRequest(trial_id=trial_id), trial_id=trial_id,
                   timeout=timeout)

    def _call(self, method: str, request, trial_id: Optional[str] = None, with_call: bool = False,
              timeout: Optional[float] = None, metadata: Sequence = ()):
        metadata = [(TUNER_KEY, self.tuner_id), (SESSION_KEY, self.session), *metadata]
        if trial_id in self.leases:
            metadata.append((LEASE_KEY, self.leases[trial_id]))
        stub = getattr(self.stub, method)
        deadline = time.monotonic() + (self.connect_seconds if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                response, call = stub.with_call(request, metadata=metadata, wait_for_ready=True,
                                                timeout=max(0.01, min(CALL_SECONDS, remaining)))
                self.answered = time.monotonic()
                return (response, call) if with_call else response
            except grpc.RpcError as error:
                code = error.code() if callable(getattr(error, "code", None)) else None
                if code is not None and code not in RETRIED_CODES:
                    self.answered = time.monotonic()
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise SearchStoppedError(error.details()) from None
                if code == grpc.StatusCode.ABORTED:
                    raise LeaseLostError(error.details()) from None
                if code not in RETRIED_CODES or time.monotonic() >= deadline - 0.01:
                    name = code.name if code is not None else "no answer"
                    raise TfftError(f"lost the search's oracle at {self.address}: {name} after "
                                    f"{self.connect_seconds if timeout is None else timeout:.0f}s; is the chief "
                                    f"(KERASTUNER_TUNER_ID=chief) running?") from None
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


class TrialLease:
    """A worker's lease on the trial it runs: renewed in the background, confirmed before writes.

    ``check()`` raises ``LeaseLostError`` (or ``SearchStoppedError``) once the chief refused the
    lease, and also when the lease could not be confirmed for ``lease_seconds`` (the chief may
    have given the trial to another worker meanwhile), so a worker never writes into a trial
    directory it may no longer own."""

    def __init__(self, client: PatientOracleClient, trial_id: str, lease_seconds: float):
        self.client, self.trial_id, self.lease_seconds = client, trial_id, lease_seconds
        self.confirmed = time.monotonic()  # it was just handed out
        self.refusal: Optional[Exception] = None

    def renew(self) -> None:
        sent = time.monotonic()
        try:
            self.client.renew(self.trial_id, timeout=self.lease_seconds / 4)
        except (SearchStoppedError, LeaseLostError) as refusal:
            self.refusal = refusal
        except (TfftError, grpc.RpcError):
            pass  # the chief unreachable for now: the lease runs out unless a later renewal gets through
        else:
            self.confirmed = max(self.confirmed, sent)

    def raise_if_lost(self) -> None:
        """Raise if the chief has refused this lease, or if it could not be confirmed for a whole
        lease (then one renewal is tried first, for the chief's own reason). No call otherwise."""
        if self.refusal is None and time.monotonic() - self.confirmed > self.lease_seconds:
            self.renew()
            if self.refusal is None and time.monotonic() - self.confirmed > self.lease_seconds:
                self.refusal = LeaseLostError(f"trial {self.trial_id}: the lease could not be confirmed for "
                                              f"{self.lease_seconds:.0f}s; the chief may have given the trial to "
                                              "another worker")
        if self.refusal is not None:
            raise self.refusal

    def check(self) -> None:
        """Confirm the lease is still this worker's (renewing it unless confirmed in the last
        quarter lease), or raise."""
        if self.refusal is None and time.monotonic() - self.confirmed > self.lease_seconds / 4:
            self.renew()
        self.raise_if_lost()

    @property
    def lost(self) -> bool:
        return self.refusal is not None


@contextlib.contextmanager
def lease_renewal(oracle, trial_id: str, lease_seconds: float) -> Iterator[Optional[TrialLease]]:
    """On a worker, renew the lease on ``trial_id`` every quarter lease while the trial runs; yields
    the :class:`TrialLease` (None outside a distributed search). Leaving never waits for a renewal."""
    if not isinstance(oracle, PatientOracleClient):
        yield None
        return
    lease = TrialLease(oracle, trial_id, lease_seconds)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 4) and not lease.lost:
            lease.renew()

    threading.Thread(target=renew, name=f"lease-{trial_id}", daemon=True).start()
    try:
        yield lease
    finally:
        stop.set()  # a renewal under way ends within its own timeout; nothing waits for it


def _exit_lost(reason: str) -> None:
    """Print tfft's one-line error for a lost chief and exit 2 at once (the main thread may be deep in
    TensorFlow). The short pause lets the CLI's stderr filter pass the line on."""
    sys.stdout.flush()
    print(f"tfft tune: error: {reason}", file=sys.stderr, flush=True)
    time.sleep(0.5)
    os._exit(2)


def patient_client(client: OracleClient) -> PatientOracleClient:
    """KerasTuner's worker client (``BaseTuner`` makes one) as a :class:`PatientOracleClient`."""
    return PatientOracleClient(client._oracle, connect_seconds=CONNECT_SECONDS)
