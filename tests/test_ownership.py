"""tfft deletes or replaces only what it made; names stay inside their folder; operating-system failures
(a file-size limit, a path under a file, a closed output pipe) end in one line, the previous run or export
intact. Refusals are checked to come before any training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_DATA
from tfft.cli import main
from tfft.config import TrainConfig
from tfft.errors import ConfigError, os_failure
from tfft.export.saved_model import next_version
from tfft.ownership import EXPORT, MARKER_FILE, MAX_VERSION, RUN, check_owned, mark, remove_owned
from tfft.training.trainer import train

TRAIN_FILE = SAMPLE_DATA / "ner_train.txt"
TINY_RUN = ["--task", "token-classification", "--epochs", "1", "--batch-size", "16", "--max-train-examples", "32",
            "--no-tensorboard"]


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run trained once for the module (one epoch of 32 sentences)."""
    config = TrainConfig(task="token-classification", train=str(TRAIN_FILE), model=str(tiny_model_dir),
                         output_dir=str(tmp_path_factory.mktemp("finished") / "run"), epochs=1, batch_size=16,
                         max_train_examples=32, tensorboard=False)
    return train(config).run_dir


def train_args(model_dir, output_dir, *extra, train_file=TRAIN_FILE):
    return ["train", *TINY_RUN, "--model", str(model_dir), "--train", str(train_file), "--output-dir",
            str(output_dir), *extra]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: what must survive a refusal."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def refused(capsys, argv) -> str:
    """Run the CLI, expect exit 2 before any training, and return its one line of error."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Training " not in captured.out and "Epoch" not in captured.out  # refused before any training
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def users_folder(path: Path) -> Path:
    """A folder of the user's own: a data file, notes and a subfolder."""
    (path / "drafts").mkdir(parents=True)
    shutil.copy(TRAIN_FILE, path / "train.txt")
    (path / "notes.md").write_text("mine\n")
    return path


def test_overwrite_refuses_a_folder_of_the_users_files(tiny_model_dir, tmp_path, capsys):
    folder = users_folder(tmp_path / "work")
    before = snapshot(folder)
    line = refused(capsys, train_args(tiny_model_dir, folder, "--overwrite"))
    assert line == (f"tfft train: error: {folder} has no tfft marker ({MARKER_FILE}) and holds 2 files and 1 folder: "
                    "drafts/, notes.md, train.txt; tfft replaces only directories it made: choose another "
                    "--output-dir, or an empty or new directory")
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no .work.partial, no lock left


def test_the_users_data_folder_is_refused_even_as_the_current_directory(tiny_model_dir, tmp_path, capsys,
                                                                        monkeypatch):
    folder = users_folder(tmp_path / "data")
    before = snapshot(folder)
    monkeypatch.chdir(folder)
    for spelling in (".", "./", str(folder)):
        line = refused(capsys, train_args(tiny_model_dir, spelling, "--overwrite", train_file="train.txt"))
        assert f"error: {Path(spelling)} has no tfft marker (.tfft) and holds 2 files and 1 folder: drafts/, notes.md, " \
               "train.txt;" in line
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no ..partial, ..old-*, lock


def test_a_run_directory_holding_the_runs_own_data_is_refused(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    mark(run, RUN)
    shutil.copy(TRAIN_FILE, run / "train.txt")
    line = refused(capsys, train_args(tiny_model_dir, run, "--overwrite", train_file=run / "train.txt"))
    assert line == (f"tfft train: error: --train {run / 'train.txt'} is inside --output-dir {run}, which the run "
                    "replaces; choose another --output-dir")
    assert (run / "train.txt").read_bytes() == TRAIN_FILE.read_bytes()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_plain_file_is_not_called_a_finished_run_and_is_kept(tiny_model_dir, tmp_path, capsys, overwrite):
    path = tmp_path / "results.txt"
    path.write_text("precious\n")
    line = refused(capsys, train_args(tiny_model_dir, path, *overwrite))
    assert line == (f"tfft train: error: {path} is a file, not a tfft run directory; tfft replaces only directories "
                    "it made; choose another --output-dir")
    assert path.read_text() == "precious\n"


def test_without_overwrite_a_users_folder_is_not_called_a_finished_run(tiny_model_dir, tmp_path, capsys):
    folder = users_folder(tmp_path / "work")
    line = refused(capsys, train_args(tiny_model_dir, folder))
    assert "already holds a finished run" not in line
    assert f"{folder} has no tfft marker (.tfft) and holds 2 files and 1 folder" in line


def test_overwrite_keeps_a_work_directory_that_tfft_did_not_make(tiny_model_dir, tmp_path, capsys):
    work = users_folder(tmp_path / ".run.partial")
    before = snapshot(work)
    line = refused(capsys, train_args(tiny_model_dir, tmp_path / "run", "--overwrite"))
    assert f"error: {work} has no tfft marker (.tfft) and holds 2 files and 1 folder" in line
    assert snapshot(work) == before and not (tmp_path / "run").exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_work_directory_that_is_a_link_is_refused_and_what_it_points_to_kept(tiny_model_dir, tmp_path, capsys,
                                                                                overwrite):
    elsewhere = tmp_path / "elsewhere"
    mark(elsewhere, RUN)  # even a directory tfft made: the link at its staging name is not tfft's
    (elsewhere / "keep.txt").write_text("mine\n")
    before = snapshot(elsewhere)
    link = tmp_path / ".run.partial"
    link.symlink_to(elsewhere)
    line = refused(capsys, train_args(tiny_model_dir, tmp_path / "run", *overwrite))
    assert line == (f"tfft train: error: {link} is a symbolic link (to {elsewhere}), not a directory tfft made; tfft "
                    "deletes and moves only directories it made: remove the link, or choose another --output-dir")
    assert link.is_symlink() and snapshot(elsewhere) == before and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="is a symbolic link"):  # and so is every deletion of what tfft owns
        remove_owned(link, RUN)
    assert link.is_symlink() and snapshot(elsewhere) == before


def test_a_link_loop_or_a_file_on_the_way_is_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    line = refused(capsys, train_args(tiny_model_dir, loop))
    assert line == (f"tfft train: error: {loop} is a symbolic link that leads to no directory (a loop, or a missing "
                    "target); choose another --output-dir")
    notes = tmp_path / "notes.txt"  # (train: test_a_directory_that_cannot_be_made_is_one_line)
    notes.write_text("mine\n")
    tune = ["tune", *TINY_RUN, "--model", str(tiny_model_dir), "--train", str(TRAIN_FILE), "--validation",
            str(SAMPLE_DATA / "ner_valid.txt"), "--max-trials", "1", "--output-dir", str(notes / "a" / "tune")]
    assert refused(capsys, tune) == (f"tfft tune: error: {notes / 'a' / 'tune'} cannot be made: {notes} is a file, "
                                     "not a folder; choose another --output-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop", "notes.txt"] and notes.read_text() == "mine\n"


def test_an_empty_folder_takes_a_run_and_every_spelling_of_it_is_the_same_run(tiny_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    runs = tmp_path / "runs"
    (runs / "x").mkdir(parents=True)  # empty: nothing to lose, no --overwrite needed
    assert main(train_args(tiny_model_dir, runs / "x")) == 0
    assert json.loads((runs / "x" / MARKER_FILE).read_text())["kind"] == "run"
    (runs / "link").symlink_to(runs / "x")
    capsys.readouterr()
    for spelling in (f"{runs}/x/", f"{runs}/./x", f"{runs}/x/../x", runs / "link"):
        line = refused(capsys, train_args(tiny_model_dir, spelling))
        assert line == (f"tfft train: error: {Path(spelling)} already holds a finished run; pass --overwrite to replace "
                        "it, or choose another --output-dir")
    stamp = (runs / "x" / "metrics.json").stat().st_mtime_ns
    monkeypatch.chdir(runs / "x")
    assert main(train_args(tiny_model_dir, ".", "--overwrite")) == 0
    assert (runs / "x" / "metrics.json").stat().st_mtime_ns != stamp  # replaced, in place
    assert sorted(p.name for p in runs.iterdir()) == ["link", "x"]  # no ..partial, .x.old-*, lock
    assert (runs / "link").is_symlink()


def test_directories_of_earlier_tfft_versions_and_other_kinds(tmp_path):
    from tfft.tuning.tuner import SEARCH

    legacy = tmp_path / "legacy"  # a finished run of a tfft without markers
    (legacy / "model").mkdir(parents=True)
    (legacy / "config.yaml").write_text("task: token-classification\n")
    (legacy / "metrics.json").write_text("{}\n")
    assert check_owned(legacy, RUN) is True
    (legacy / "metrics.json").unlink()  # not every file of a run: not recognised
    with pytest.raises(ConfigError, match=r"has no tfft marker \(\.tfft\) and holds 1 file and 1 folder: config"):
        check_owned(legacy, RUN)
    old_search = tmp_path / "tune"
    (old_search / "search").mkdir(parents=True)
    (old_search / "search" / "oracle.json").write_text("{}")
    assert check_owned(old_search, SEARCH) is True
    mark(tmp_path / "search", SEARCH)
    with pytest.raises(ConfigError, match=r"search is a tfft search directory, not a run directory"):
        check_owned(tmp_path / "search", RUN)
    assert check_owned(tmp_path / "absent", RUN) is False
    (tmp_path / "empty").mkdir()
    assert check_owned(tmp_path / "empty", RUN) is False


def test_tune_overwrite_discards_only_a_search(tiny_model_dir, tmp_path, capsys):
    folder = users_folder(tmp_path / "work")
    (folder / "search").mkdir()  # what KerasTuner's overwrite would delete
    (folder / "search" / "keep.txt").write_text("mine\n")
    before = snapshot(folder)
    tune = ["tune", *TINY_RUN, "--model", str(tiny_model_dir), "--train", str(TRAIN_FILE), "--validation",
            str(SAMPLE_DATA / "ner_valid.txt"), "--max-trials", "1", "--overwrite"]
    line = refused(capsys, [*tune, "--output-dir", str(folder)])
    assert f"error: {folder} has no tfft marker (.tfft) and holds 2 files and 2 folders" in line
    assert snapshot(folder) == before
    run = tmp_path / "run"
    mark(run, RUN)
    line = refused(capsys, [*tune, "--output-dir", str(run)])
    assert line.endswith(f"error: {run} is a tfft run directory, not a search directory; choose another --output-dir")


def test_a_search_directory_holding_the_searchs_own_data_is_refused(tiny_model_dir, tmp_path, capsys):
    from tfft.tuning.tuner import SEARCH

    search = tmp_path / "tune"
    (search / "search").mkdir(parents=True)
    mark(search, SEARCH)
    data = search / "search" / "train.txt"  # KerasTuner's --overwrite deletes search/ with it
    shutil.copy(TRAIN_FILE, data)
    tune = ["tune", *TINY_RUN, "--model", str(tiny_model_dir), "--train", str(data), "--validation",
            str(SAMPLE_DATA / "ner_valid.txt"), "--max-trials", "1", "--output-dir", str(search), "--overwrite"]
    assert refused(capsys, tune) == (f"tfft tune: error: --train {data} is inside --output-dir {search}, which the "
                                     "search partly replaces (search/, best/); choose another --output-dir")
    assert data.read_bytes() == TRAIN_FILE.read_bytes()


@pytest.mark.parametrize("options, expected", [
    (["--name", "../x"], "--name must be a plain name (a directory inside its folder), got '../x': it holds a path "
                         "separator"),
    (["--name", "a/b"], "--name must be a plain name (a directory inside its folder), got 'a/b': it holds a path "
                        "separator"),
    (["--name", ""], "got '': it is empty"),
    (["--name", ".."], "got '..': it starts with '.'"),
    (["--name", "x", "--version", "-1"], "--version must be a whole number from 1 to 9223372036854775807 (TF "
                                         "Serving loads no other version directory), got -1"),
    (["--name", "x", "--version", "0"], "got 0"),
    (["--name", "../x", "--format", "tflite", "--quantize", "float16"], "--name must be a plain name"),
])
def test_export_names_and_versions_stay_inside_the_export_dir(finished_run, tmp_path, capsys, options, expected):
    exports = tmp_path / "store" / "models"
    line = refused(capsys, ["export", str(finished_run), "--export-dir", str(exports), *options])
    assert line.startswith("tfft export: error: ") and expected in line
    assert not (tmp_path / "store").exists()  # nothing written, inside the export dir or beside it


@pytest.mark.parametrize("options", [[], ["--format", "tflite", "--quantize", "float16"]])
def test_an_export_inside_a_run_directory_is_refused(finished_run, capsys, options):
    """``train --overwrite`` on the run would delete the export with it."""
    before = snapshot(finished_run)
    line = refused(capsys, ["export", str(finished_run), "--name", "ner", "--export-dir",
                            str(finished_run / "exports"), *options])
    assert line == (f"tfft export: error: --export-dir {finished_run / 'exports'} is inside {finished_run}, a tfft run "
                    "directory, which --overwrite replaces as a whole; choose another --export-dir")
    assert snapshot(finished_run) == before


def test_only_folders_named_with_ascii_digits_are_export_versions(tmp_path):
    for name in ("1", "7", "²", "١٢", "07x", "tflite"):  # str.isdigit() holds for ² and ١٢ (Arabic-Indic 12)
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 8
    (tmp_path / str(MAX_VERSION)).mkdir()  # no version after it that TF Serving loads
    with pytest.raises(ConfigError, match=f"the next free version under {tmp_path} must be a whole number from 1 to "
                                          f"{MAX_VERSION}"):
        next_version(tmp_path)


def test_a_trial_id_cannot_lead_out_of_the_search():
    from tfft.tuning.tuner import TfftTuner

    with pytest.raises(ConfigError, match=r"a trial id must be a plain name .* got '\.\./x'"):
        TfftTuner.trial_dir(None, "../x")  # checked before the tuner is asked for the path


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, a write fails with EFBIG instead of a kill
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from tfft.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_limited(limit: int, argv, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a child process whose files may not grow beyond ``limit`` bytes (RLIMIT_FSIZE)."""
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, **kwargs)


def assert_one_line_error(process: subprocess.CompletedProcess, command: str, problem: str) -> str:
    assert process.returncode == 2, process.stderr[-3000:]  # not 139: no segmentation fault
    assert "Traceback" not in process.stderr and "Exception ignored" not in process.stderr, process.stderr[-3000:]
    errors = [line for line in process.stderr.splitlines() if line.startswith(f"tfft {command}: error: ")]
    assert len(errors) == 1 and errors[0].endswith(f": {problem}"), process.stderr[-3000:]
    return errors[0]


def test_hdf5_files_are_written_from_memory_so_a_full_disk_is_an_oserror(tmp_path):
    import errno

    import h5py
    import numpy as np

    from tfft.files import hdf5_written_in_memory

    original = h5py.File
    with pytest.raises(OSError) as raised, hdf5_written_in_memory():
        with h5py.File("/dev/full", "w") as handle:  # every write: ENOSPC, as on a full disk
            handle["weights"] = np.arange(1000.0)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, "/dev/full")
    assert h5py.File is original
    with hdf5_written_in_memory():
        with h5py.File(tmp_path / "w.h5", "w") as handle:
            handle["weights"] = np.arange(1000.0)
    with h5py.File(tmp_path / "w.h5", "r") as handle:
        assert handle["weights"][-1] == 999.0


@pytest.mark.slow  # a child process trains; the logic: the test above and test_operating_system_failures_...
def test_a_file_size_limit_while_writing_a_run_is_one_line_and_keeps_the_previous_run(finished_run, tiny_model_dir,
                                                                                     tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    # Below the size of the model's weights file (HDF5, whose failed writes used to crash the process),
    # above the training's own checkpoint.
    limit = (run / "model" / "tf_model.h5").stat().st_size - 8
    process = run_limited(limit, train_args(tiny_model_dir, run, "--overwrite"), tmp_path)
    line = assert_one_line_error(process, "train", "File too large")
    assert str(tmp_path / ".run.partial") in line
    assert snapshot(run) == before


@pytest.mark.slow  # a child process traces the whole serving graph before it writes (about a minute here)
def test_a_file_size_limit_while_exporting_is_one_line_and_keeps_the_previous_export(finished_run, tmp_path):
    previous = tmp_path / "models" / "ner" / "1"  # stands for an earlier export: only its bytes are compared
    mark(previous, EXPORT)
    (previous / "saved_model.pb").write_bytes(b"earlier")
    before = snapshot(tmp_path / "models")
    process = run_limited(20_000, ["export", finished_run, "--name", "ner", "--export-dir", tmp_path / "models"],
                          tmp_path)
    assert_one_line_error(process, "export", "File too large")
    assert snapshot(tmp_path / "models") == before  # no 2/, no staging directory left


def test_a_directory_that_cannot_be_made_is_one_line(finished_run, tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"  # tests run as root, whom read-only modes do not stop: a path under a file
    blocker.write_text("")
    for run in (blocker / "run", blocker / "runs" / "run"):  # said before any work, not as the OS's "File exists"
        line = refused(capsys, train_args(tiny_model_dir, run))
        assert line == (f"tfft train: error: {run} cannot be made: {blocker} is a file, not a folder; choose another "
                        "--output-dir")
    line = refused(capsys, ["export", str(finished_run), "--name", "ner", "--export-dir", str(blocker / "models")])
    assert line.startswith(f"tfft export: error: {blocker}") and line.endswith(": Not a directory")


def test_operating_system_failures_read_as_path_and_problem():
    import errno

    from tfft.backend import tf

    assert os_failure(PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x")) == (
        "/srv/runs/x: Permission denied")
    assert os_failure(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    saving = tf.errors.ResourceExhaustedError(None, None, "{{function_node SaveV2}} /srv/runs/.x.partial/backup/"
                                                          "ckpt-1.data; No space left on device [Op:SaveV2]")
    assert os_failure(saving) == "/srv/runs/.x.partial/backup/ckpt-1.data: No space left on device"
    assert os_failure(tf.errors.InvalidArgumentError(None, None, "logits and labels must match")) is None
    assert os_failure(ValueError("x")) is None


def test_predict_onto_a_full_disk_is_one_line(finished_run, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("Anna flew to Tokyo .\n" * 50)
    with open("/dev/full", "w") as full:  # every write: ENOSPC
        process = subprocess.run([sys.executable, "-c", "import sys; from tfft.cli import main; "
                                  "sys.exit(main(sys.argv[1:]))", "predict", str(finished_run), "--input", str(lines)],
                                 stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
    assert_one_line_error(process, "predict", "No space left on device")


def test_predict_into_a_closed_pipe_stops_quietly_as_grep_does(finished_run, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("Anna flew to Tokyo .\n" * 50)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head -1`) has gone before the first line is written
    try:
        process = subprocess.run([sys.executable, "-c", "import sys; from tfft.cli import main; "
                                  "sys.exit(main(sys.argv[1:]))", "predict", str(finished_run), "--input", str(lines)],
                                 stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)
    assert process.returncode == 141, process.stderr[-3000:]  # 128 + SIGPIPE: what a shell shows for grep
    assert "Traceback" not in process.stderr and "BrokenPipe" not in process.stderr
    assert "error" not in process.stderr, process.stderr[-3000:]
