"""The guides' marked snippets run here, in order, as a reader would type them (`make docs-check`).

A fenced block right after the line ``<!-- docs-check -->`` in README.md or docs/*.md is run:
``bash`` blocks by bash (``set -euo pipefail``), ``python`` blocks by Python; ``<!-- docs-check
exit=2 -->`` marks a bash block that must fail with that exit code and an error message (the
troubleshooting guide shows refusals). The blocks of one file run one after the other in a
fresh directory holding a copy of ``examples/``, so every guide must be self-contained.

Speed: ``tfft`` in the blocks is a small client that hands its arguments, working directory
and standard input to this test process, which runs ``tfft.cli.main`` (TensorFlow is imported
once, not once per command). ``tfft train`` and ``tfft tune`` get ``--model TINY --epochs 1``
appended (the last flag wins), and in Python blocks the assignments ``model_name = ...`` and
``epochs = ...`` are replaced the same way, so the guides' text stays runnable as written
while the check trains the tiny random-init model of conftest.py. Guides repeat the demo run to
stay self-contained; a ``tfft train`` command that an earlier guide ran with the same arguments
on the same files is not trained again: its run directory is copied from that run.
``DOCS_CHECK_AS_WRITTEN=1 make docs-check`` runs the snippets exactly as written instead (with
the real model: minutes).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from conftest import REPO

DOCS = REPO / "docs"
BLOCK = re.compile(r"^<!-- docs-check(?: exit=(?P<exit>\d+))? -->\n```(?P<language>bash|python)\n(?P<code>.*?)^```$",
                   re.M | re.S)
BLOCK_TIMEOUT = 300  # seconds for one block; the tiny model makes each take seconds
# Guides with nothing a reader can run offline on the sample data, and why.
UNCHECKED = {
    "results.md": "its commands re-run benchmarks on ../shared/data (CoNLL-2003, SST-2) for minutes to hours",
    "scaling.md": "its commands need several GPUs, hosts, a Kubernetes or Slurm cluster or a TPU",
}
AS_WRITTEN = os.environ.get("DOCS_CHECK_AS_WRITTEN") == "1"


@dataclass
class Block:
    path: Path
    line: int
    language: str
    code: str
    exit_code: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def checked_blocks(path: Path) -> List[Block]:
    """The marked blocks of a markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    return [Block(path, text.count("\n", 0, m.start("code")) + 1, m["language"], m["code"], int(m["exit"] or 0))
            for m in BLOCK.finditer(text)]


def documents() -> List[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def test_every_guide_has_checked_snippets():
    for path in sorted(DOCS.glob("*.md")):
        if path.name in UNCHECKED:
            continue
        assert checked_blocks(path), (f"{path.relative_to(REPO)} has no <!-- docs-check --> block; mark the snippets a "
                                      f"reader can run on the sample data, or list the guide in UNCHECKED with why")
    marks = sum(len(re.findall(r"^<!-- docs-check", p.read_text(encoding="utf-8"), flags=re.M)) for p in documents())
    assert marks == sum(len(checked_blocks(p)) for p in documents()), \
        "a <!-- docs-check --> mark is not followed directly by a ```bash or ```python block"


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def heading_anchors(path: Path) -> set:
    """The anchors GitHub gives the headings of a markdown file (fenced code skipped)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    anchors = set()
    for heading in re.findall(r"^#+ +(.+?) *$", text, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_links_between_the_readme_and_the_guides_resolve():
    broken = []
    for path in [*documents(), REPO / "CHANGELOG.md"]:
        for match in LINK.finditer(path.read_text(encoding="utf-8")):
            target = match["target"]
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


class _CliServer(socketserver.UnixStreamServer):
    """Runs ``tfft.cli.main`` for the ``tfft`` client of the blocks, one command at a time."""

    def __init__(self, socket_path: str, extra_args: Callable[[List[str]], List[str]], runs: "TrainedRuns"):
        super().__init__(socket_path, _CliHandler)
        self.extra_args = extra_args
        self.runs = runs


class _CliHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = json.loads(self.rfile.read())
        argv = request["argv"] + self.server.extra_args(request["argv"])
        reply = self.server.runs.reuse(argv, request["cwd"])
        if reply is None:
            reply = run_in_process(lambda: _cli_main(argv), request["cwd"], request["stdin"].encode("latin-1"))
            self.server.runs.remember(argv, request["cwd"], reply)
        self.wfile.write(json.dumps(reply).encode("utf-8"))


def _cli_main(argv: List[str]) -> int:
    from tfft.cli import main

    return main(argv)


class TrainedRuns:
    """Run directories of finished ``tfft train`` commands, by arguments and the content of the files they name."""

    def __init__(self, store: Path):
        self.store = store
        self.replies: Dict[str, Dict] = {}

    def _key(self, argv: List[str], cwd: str) -> Optional[str]:
        if not argv or argv[0] != "train":
            return None
        named = {a: hashlib.sha256(Path(cwd, a).read_bytes()).hexdigest() for a in argv if Path(cwd, a).is_file()}
        return json.dumps([argv, named])

    def _run_dir(self, argv: List[str], cwd: str) -> Path:
        from tfft.cli import build_parser, config_from_args

        previous = os.getcwd()
        os.chdir(cwd)  # a --config path is relative to the working directory
        try:
            return Path(cwd, config_from_args(build_parser().parse_args(argv)).run_dir)
        finally:
            os.chdir(previous)

    def remember(self, argv: List[str], cwd: str, reply: Dict) -> None:
        key = self._key(argv, cwd)
        if key is None or reply["code"] != 0:
            return
        saved = self.store / str(len(self.replies))
        shutil.copytree(self._run_dir(argv, cwd), saved, symlinks=True)
        self.replies[key] = {**reply, "saved": str(saved)}

    def reuse(self, argv: List[str], cwd: str) -> Optional[Dict]:
        """The earlier reply, with its run directory copied into ``cwd``; None when there is none to reuse."""
        key = self._key(argv, cwd)
        if key not in self.replies:
            return None
        run_dir = self._run_dir(argv, cwd)
        if run_dir.exists():
            if "--overwrite" not in argv:
                return None  # the command must refuse to replace it: let it run
            shutil.rmtree(run_dir)
        shutil.copytree(self.replies[key]["saved"], run_dir, symlinks=True)
        return {name: value for name, value in self.replies[key].items() if name != "saved"}


def run_in_process(function: Callable[[], Optional[int]], cwd: str, stdin: bytes = b"") -> Dict:
    """``function()`` in ``cwd`` with ``stdin``, its output captured: ``{"code", "stdout", "stderr"}``."""
    stdout, stderr = io.StringIO(), io.StringIO()
    previous_cwd, previous_stdin = os.getcwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(stdin)), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = function() or 0
            except SystemExit as exit_:  # argparse: --help, --version, usage errors
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # noqa: B036  (a traceback is what the failing block must show)
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous_cwd)
        sys.stdin = previous_stdin
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


CLIENT = """#!{python}
import json, os, socket, sys
connection = socket.socket(socket.AF_UNIX)
connection.connect({socket!r})
stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
connection.sendall(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": stdin.decode("latin-1")}}).encode())
connection.shutdown(socket.SHUT_WR)
reply = json.loads(b"".join(iter(lambda: connection.recv(1 << 16), b"")))
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["code"])
"""


@contextlib.contextmanager
def tfft_client(model: Optional[str], runs: TrainedRuns) -> Iterator[Path]:
    """A directory holding a ``tfft`` executable served by this process; yields the directory."""
    def extra_args(argv: List[str]) -> List[str]:
        if AS_WRITTEN or not argv or argv[0] not in ("train", "tune"):
            return []
        return ["--model", str(model), "--epochs", "1"]

    scratch = Path(tempfile.mkdtemp(prefix="tfft-docs-"))  # short: a socket path has at most ~100 characters
    server = _CliServer(str(scratch / "cli.sock"), extra_args, runs)
    thread = threading.Thread(target=server.serve_forever, name="docs-check-cli", daemon=True)
    thread.start()
    try:
        client = scratch / "bin" / "tfft"
        client.parent.mkdir()
        client.write_text(CLIENT.format(python=sys.executable, socket=str(scratch / "cli.sock")), encoding="utf-8")
        client.chmod(0o755)
        yield client.parent
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(scratch, ignore_errors=True)


def python_code(block: Block, model: Optional[str]) -> str:
    """The block's code, with ``model_name``/``epochs`` set for the tiny model (unless DOCS_CHECK_AS_WRITTEN=1)."""
    if AS_WRITTEN:
        return block.code
    code = re.sub(r"^model_name = .*$", f"model_name = {str(model)!r}", block.code, flags=re.M)
    return re.sub(r"^epochs = .*$", "epochs = 1", code, flags=re.M)


def run_block(block: Block, work: Path, bin_dir: Path, model: Optional[str]) -> Dict:
    if block.language == "python":
        code = compile(python_code(block, model), block.where, "exec")
        return run_in_process(lambda: exec(code, {"__name__": "__main__"}), str(work))
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.code], cwd=work, env=environment,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    return {"code": process.returncode, "stdout": process.stdout, "stderr": process.stderr}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> TrainedRuns:
    return TrainedRuns(tmp_path_factory.mktemp("trained-runs"))


@pytest.mark.parametrize("document", [str(p.relative_to(REPO)) for p in documents() if checked_blocks(p)])
def test_snippets_run_as_written(document, tiny_model_dir, trained_runs, tmp_path):
    model = tiny_model_dir
    work = tmp_path / "reader"
    work.mkdir()
    shutil.copytree(REPO / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    with tfft_client(model, trained_runs) as bin_dir:
        for block in checked_blocks(REPO / document):
            started = time.monotonic()
            result = run_block(block, work, bin_dir, model)
            print(f"docs-check: {block.where} ran in {time.monotonic() - started:.1f}s")
            shown = f"{block.where}:\n{block.code}\n--- stdout:\n{result['stdout'][-4000:]}\n" \
                    f"--- stderr:\n{result['stderr'][-4000:]}"
            assert result["code"] == block.exit_code, f"exit code {result['code']}, expected {block.exit_code}: {shown}"
            if block.exit_code:
                assert "error" in result["stderr"], f"no error message: {shown}"
