"""The sandbox of the `python` tool, tried for real: what must stay contained at the
bubblewrap and namespaces levels (the host's files, coop's state, the network, a fork bomb),
the limits and the report at every level, and `choose`, which never gives a weaker level than
asked. A level this node cannot run is skipped, with the reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coop.sandbox import Limits, Sandbox, SandboxUnavailable, choose
from tests.support.sandboxes import QUICK, STRONG, strays

SECRETS = {
    "OPENAI_API_KEY": "sk-sandbox-secret",
    "WEAVIATE_API_KEY": "wv-sandbox-secret",
    "RAY_AUTH_TOKEN": "ray-sandbox-secret",
}
"""Secrets a coop process may hold in its environment."""
BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
"""A fork bomb: every process forks for ever."""


def test_writing_outside_the_scratch_dir_fails(strong: Sandbox, host_dir: Path) -> None:
    target = host_dir / "escaped"
    code = f"""
for path in ({str(target)!r}, "/escaped", "/var/tmp/escaped"):
    try:
        open(path, "w").write("out")
        print("written", path)
    except OSError:  # read-only, or not there at all
        print("blocked")
open("inside", "w").write("fine")
print(open("inside").read())
"""
    run = strong.run(code, QUICK)
    assert run.stdout.splitlines() == ["blocked"] * 3 + ["fine"], run
    assert not target.exists()
    assert not Path("/escaped").exists() and not Path("/var/tmp/escaped").exists()


def test_state_dir_and_ray_dir_are_hidden(
    strong: Sandbox, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, state = host_dir / "home", host_dir / "state"
    (home / ".ray").mkdir(parents=True)
    state.mkdir()
    (home / ".ray" / "session").write_text("ray secret")
    (state / "journal.db").write_text("state secret")
    for path in (host_dir, home, home / ".ray", state):
        path.chmod(0o755)  # readable by all: only the sandbox hides them
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COOP_STATE_DIR", str(state))
    code = f"""
import os
for path in ({str(state)!r}, {str(home / ".ray")!r}):
    print(sorted(os.listdir(path)) if os.path.isdir(path) else "absent")
for path in ({str(state / "journal.db")!r}, {str(home / ".ray" / "session")!r}):
    try:
        print(open(path).read())
    except OSError as exc:
        print(type(exc).__name__)
"""
    run = strong.run(code, QUICK)
    assert run.exit_code == 0, run
    assert "secret" not in run.stdout
    assert run.stdout.splitlines()[2:] == ["FileNotFoundError"] * 2


def test_the_env_file_coop_would_read_is_hidden(
    strong: Sandbox, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = host_dir / ".env"
    dotenv.write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    dotenv.chmod(0o644)
    monkeypatch.chdir(host_dir)
    code = f"""
try:
    print(repr(open({str(dotenv)!r}).read()))
except OSError as exc:
    print(type(exc).__name__)
"""
    run = strong.run(code, QUICK)
    assert run.stdout == "FileNotFoundError\n", run  # not in the sandbox's view at all


def test_network_is_unreachable(strong: Sandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"""
import socket
for address in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
    try:
        socket.create_connection(address, timeout=2).close()
        print("connected", address)
    except OSError:
        print("blocked")
"""
        run = strong.run(code, QUICK)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert run.stdout.splitlines() == ["blocked"] * 3, run


def test_a_fork_bomb_is_contained(strong: Sandbox) -> None:
    bounded = """
import os, time
count = 0
for _ in range(100):
    try:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
    except OSError:
        break
    count += 1
print(count)
"""
    limits = Limits(cpu_seconds=1, wall_seconds=2, processes=16)
    run = strong.run(bounded, limits)  # no bomb unless the limit holds
    assert int(run.stdout) < limits.processes, run
    run = strong.run(BOMB, limits)
    assert run.timed_out or run.cpu_exceeded, run
    assert run.seconds < limits.wall_seconds + 2
    subprocess.run(["true"], check=True)
    deadline = time.monotonic() + 3
    while strays() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not strays()


def test_a_memory_hog_is_stopped_and_reported(any_level: Sandbox) -> None:
    code = "hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))\n"
    run = any_level.run(code, QUICK)
    assert run.memory_exceeded and run.exit_code == 1, run
    assert run.stderr.rstrip().endswith("MemoryError")


def test_an_infinite_loop_is_stopped_by_the_cpu_limit(any_level: Sandbox) -> None:
    run = any_level.run("while True:\n    pass\n", Limits(cpu_seconds=1, wall_seconds=10))
    assert run.cpu_exceeded and not run.timed_out, run
    assert run.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert run.seconds < 5


def test_a_sleeper_is_stopped_by_the_wall_limit(any_level: Sandbox) -> None:
    run = any_level.run("import time\ntime.sleep(60)\n", Limits(wall_seconds=1))
    assert run.timed_out and not run.cpu_exceeded, run
    assert run.seconds < 3


def test_megabytes_of_output_are_cut_at_the_limit(any_level: Sandbox) -> None:
    run = any_level.run("import sys\nsys.stdout.write('x' * 5_000_000)\n", QUICK)
    assert run.truncated, run
    assert run.stdout.startswith("x" * 100) and "output cut at 4096 bytes" in run.stdout
    assert len(run.stdout) + len(run.stderr) < QUICK.output_bytes + 100
    assert run.seconds < 3


def test_no_secret_of_the_parent_environment_is_visible(
    any_level: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    run = any_level.run("import os\nprint(dict(os.environ))\n", QUICK)
    assert run.exit_code == 0, run
    for name, value in SECRETS.items():
        assert name not in run.stdout and value not in run.stdout


def test_the_scratch_dir_is_removed_whatever_the_code_left(
    any_level: Sandbox, monkeypatch: pytest.MonkeyPatch, host_dir: Path
) -> None:
    tmp_path = host_dir  # searchable by NOBODY, whose the `process` level's scratch is under root
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = """
import os
os.makedirs("locked/deep")
open("locked/deep/file", "w").write("x")
os.symlink("/etc", "etc")
os.chmod("locked/deep", 0)
os.chmod("locked", 0)
print("done")
"""
    run = any_level.run(code, QUICK)
    assert run.stdout == "done\n", run
    assert list(tmp_path.iterdir()) == []
    assert Path("/etc/passwd").exists()


def test_exit_code_and_both_streams_are_reported(any_level: Sandbox) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    run = any_level.run(code, QUICK)
    assert (run.exit_code, run.stdout, run.stderr) == (3, "out\n", "err\n")
    assert run.isolation is any_level.isolation
    run = any_level.run("raise ValueError('nope')\n", QUICK)
    assert run.exit_code == 1 and "ValueError: nope" in run.stderr
    assert not (run.memory_exceeded or run.cpu_exceeded or run.timed_out or run.truncated)


def without_binaries(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *args, **kw: None if name in missing else real(name)
    )


def test_a_missing_bwrap_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    without_binaries(monkeypatch, "bwrap")
    with pytest.raises(SandboxUnavailable) as error:
        choose("bubblewrap")
    assert "\n" not in str(error.value) and "install bubblewrap" in str(error.value)


def test_a_binary_that_fails_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kw: "/bin/false")
    with pytest.raises(SandboxUnavailable, match="trial run failed"):
        choose("namespaces")


def test_auto_never_picks_process(monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.suppress(SandboxUnavailable):
        assert choose("auto").isolation in STRONG
    without_binaries(monkeypatch, "bwrap", "unshare")
    with pytest.raises(SandboxUnavailable) as error:
        choose("auto")
    assert "\n" not in str(error.value) and "--sandbox process" in str(error.value)


def test_an_unknown_level_is_one_line() -> None:
    with pytest.raises(SandboxUnavailable, match="unknown sandbox 'docker'"):
        choose("docker")


def test_the_code_runs_on_the_sandbox_interpreter(any_level: Sandbox) -> None:
    run = any_level.run("import sys\nprint(sys.executable)\n", QUICK)
    assert run.stdout.strip() == any_level.python, run


def test_an_interpreter_installed_under_the_hosts_tmp_runs_the_code(strong: Sandbox) -> None:
    """A virtualenv under /tmp (a fresh clone's, say) is shown on top of the sandbox's own
    /tmp, not hidden by it: the code runs on it."""
    venv = Path(tempfile.mkdtemp(prefix="coop-venv-", dir="/tmp"))
    venv.chmod(0o755)  # as a clone's dirs are: NOBODY runs the code under root
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
            check=True,
        )
        script = (
            "import sys\nfrom coop.sandbox import choose\n"
            f"run = choose({strong.isolation.value!r}).run('import sys; print(sys.prefix)')\n"
            "print(run.exit_code, run.stdout.strip(), run.stderr.strip()[-200:])\n"
        )
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-c", script],
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(venv)
    assert proc.stdout.split() == ["0", str(venv)], proc.stdout + proc.stderr
