"""What the non-chief workers of a cluster do and do not do, checked in one process (the multi-process
runs in test_distributed.py check that a cluster trains the same run as one process)."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.errors import ConfigError

from conftest import SAMPLE_DATA


def fake_cluster(task_type, task_id, spec):
    resolver = SimpleNamespace(task_type=task_type, task_id=task_id,
                               cluster_spec=lambda: SimpleNamespace(as_dict=lambda: spec))
    return Cluster(SimpleNamespace(cluster_resolver=resolver))


def test_worker_index_numbers_the_chief_first_then_the_workers():
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert [fake_cluster(t, i, with_chief).index for t, i in (("chief", 0), ("worker", 0), ("worker", 1))] \
        == [0, 1, 2]
    workers_only = {"worker": ["a:1", "b:1", "c:1"]}
    assert [fake_cluster("worker", i, workers_only).index for i in range(3)] == [0, 1, 2]
    assert fake_cluster("worker", 0, workers_only).is_chief and not fake_cluster("worker", 0, with_chief).is_chief
    assert fake_cluster("chief", 0, with_chief).workers == 3
    assert Cluster(SimpleNamespace()).index == 0 and Cluster(SimpleNamespace()).is_chief  # one process, no cluster


@pytest.fixture
def as_second_worker(monkeypatch):
    """This process plays worker 1 of 2: not the chief, dropout seeded one further."""
    monkeypatch.setattr(Cluster, "index", property(lambda self: 1))


def test_another_worker_trains_without_scoring_checkpoints_or_logs_and_writes_nothing(
        as_second_worker, tiny_model_dir, tmp_path, tmp_path_factory, monkeypatch):
    import tempfile

    import tfft.training.callbacks as callbacks
    from tfft.training.data import prepare_data
    from tfft.training.fit import fit_model

    def never(*args, **kwargs):
        raise AssertionError("a worker encoded or scored the validation set, whose result only the chief's counts")

    monkeypatch.setattr(callbacks.ValidationMetrics, "score", never)
    monkeypatch.setattr(callbacks, "encode_for_inference", never)
    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
                         validation=str(SAMPLE_DATA / "sentiment_valid.tsv"), model=str(tiny_model_dir), epochs=2,
                         batch_size=16, max_train_examples=64, max_validation_examples=16,
                         output_dir=str(tmp_path / "run"))
    data = prepare_data(config)
    config = data.config
    seeds = []
    import tfft.training.fit as fit

    real_seed = fit.keras.utils.set_random_seed
    monkeypatch.setattr(fit.keras.utils, "set_random_seed", lambda seed: (seeds.append(seed), real_seed(seed)))
    model, best_epoch, history = fit_model(config, data, None, backup_dir=tmp_path / "chief-backup",
                                           cluster=Cluster.current())
    assert seeds == [config.seed, config.seed + 1]  # the same initial weights, its own dropout masks
    # The (single-process stand-in for the) chief's scores reached the logs; the worker kept them in its history.
    assert set(history) >= {"loss", "val_accuracy", "val_macro_f1", "val_loss"} and len(history["loss"]) == 2
    assert best_epoch == int(np.argmax(history["val_accuracy"]))
    assert os.listdir(tmp_path) in ([], ["chief-backup"])  # no history.csv, logs/ or best weights
    # Nothing in the temporary directory but the code AutoGraph writes there in every TensorFlow process.
    assert [name for name in os.listdir(scratch) if not name.startswith("__autograph_generated_file")] == []


def test_fit_model_refuses_a_chief_without_a_work_directory(tiny_model_dir, tmp_path):
    from tfft.training.fit import fit_model

    with pytest.raises(ValueError, match="the chief of a run needs a work directory"):
        fit_model(TrainConfig(task="sequence-classification", train="x"), None, None, cluster=Cluster.current())


def test_a_worker_keeps_only_its_share_of_the_rows_and_what_every_worker_needs(tiny_model_dir):
    from tfft.training.data import prepare_data

    config = TrainConfig(task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
                         model=str(tiny_model_dir), batch_size=8, max_train_examples=25)
    whole = prepare_data(config)
    second = fake_cluster("worker", 1, {"worker": ["a:1", "b:1"]})
    share = whole.worker_share(second)
    assert share.share == (1, 2) and share.encoding.num_rows == 12
    rows = [tuple(whole.encoding.take([i]).input_ids) for i in range(1, 25, 2)]
    assert [tuple(share.encoding.take([i]).input_ids) for i in range(12)] == rows  # rows 1, 3, 5, ...
    assert share.train_examples == whole.train_examples[1::2]
    # Every worker computes the same bucket boundaries, steps per epoch, class weights and target scale.
    assert np.array_equal(share.row_lengths, whole.encoding.row_lengths)
    assert np.array_equal(share.targets, whole.targets) and len(share.targets) == 25
    assert share.encoding.num_truncated == whole.encoding.num_truncated  # the run's count, not the share's
    assert share.worker_share(second) is share
    with pytest.raises(ValueError, match="cannot be shared again"):
        share.worker_share(fake_cluster("worker", 0, {"worker": ["a:1", "b:1"]}))
    with pytest.raises(ConfigError, match="25 training rows cannot be shared out among 26 workers"):
        whole.worker_share(fake_cluster("worker", 3, {"worker": [f"h{i}:1" for i in range(26)]}))


# What a surviving worker's training step raised when worker 1 was killed (tfft 0.4.1, loopback ports).
LOST_PEER = """Graph execution error:

Detected at node CollectiveReduceV2_1 defined at (most recent call last):
  File "/work/tfft/training/fit.py", line 83, in fit_model

Collective ops is aborted by: recvmsg:Connection reset by peer
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:
:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"recvmsg:Connection reset by peer"}
The error could be from a previous operation. Restart your program to reset.
	 [[{{node CollectiveReduceV2_1}}]] [Op:__inference_train_function_3579]"""


def test_a_lost_worker_is_named_in_one_line_that_says_how_to_resume():
    from tfft.backend import tf
    from tfft.distribution import WorkerLostError

    spec = {"worker": ["127.0.0.1:1111", "127.0.0.1:2222", "127.0.0.1:3333"]}
    with pytest.raises(WorkerLostError) as lost:
        with fake_cluster("worker", 0, spec).peers_watched():
            raise tf.errors.UnavailableError(None, None, LOST_PEER)
    message = str(lost.value)
    assert "\n" not in message and "worker 1 (worker:1 at 127.0.0.1:2222)" in message
    assert "run the same command again on every worker to resume" in message
    # The survivor is worker 1 and the chief (task 0) is gone: the chief is named, not the survivor itself.
    with pytest.raises(WorkerLostError, match=r"lost worker 0 \(worker:0 at 127.0.0.1:1111\)"):
        with fake_cluster("worker", 1, spec).peers_watched():
            raise tf.errors.UnavailableError(None, None, LOST_PEER.replace("task:1", "task:0"))
    with pytest.raises(WorkerLostError, match="lost another worker"):  # TensorFlow named no task
        with fake_cluster("worker", 1, spec).peers_watched():
            raise tf.errors.DeadlineExceededError(None, None, "Collective ops timed out")
    with pytest.raises(tf.errors.UnavailableError):  # one process: not a cluster's error, left as it is
        with Cluster(SimpleNamespace()).peers_watched():
            raise tf.errors.UnavailableError(None, None, "a remote file system is down")


def test_a_worker_lost_at_a_barrier_or_broadcast_is_named_as_in_a_fit():
    from tfft.backend import tf
    from tfft.distribution import WorkerLostError

    def lost(*args, **kwargs):
        raise tf.errors.UnavailableError(None, None, LOST_PEER)

    spec = {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}
    cluster = fake_cluster("worker", 0, spec)
    cluster.strategy.experimental_distribute_values_from_function = lost
    # the start-up broadcast and the barrier after the fit (tfft.training.trainer)
    for collective in (cluster.barrier, lambda: cluster.broadcast_reason(None)):
        with pytest.raises(WorkerLostError, match=r"^lost worker 1 \(worker:1 at 127.0.0.1:2222\) of the multi-worker "
                                                  r"cluster: .* run the same command again on every worker to resume"):
            collective()
