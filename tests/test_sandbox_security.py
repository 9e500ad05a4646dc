"""The `python` tool's sandbox probed as an attacker would, at every level this node has (a
level it lacks is skipped, saying why): each test asserts the refusal itself — the errno, the
absent path, the stopped run — not just that nothing crashed. The same probes run end to end
through `coop start --tools python` in tests/test_sandbox_e2e.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dotenv
import pyseccomp
import pytest
from ray.cluster_utils import Cluster

from coop import sandbox_filter
from coop.sandbox import Isolation, Limits, Sandbox
from coop.secret_paths import interpreter_dirs
from coop.testing.standin import MakeStandIn
from coop.types import Reason
from tests.support import probes
from tests.support.procs import SECRET, coop_env, spawn_coop, unique
from tests.support.sandboxes import QUICK, SYSTEM_PYTHON, strays


@pytest.fixture
def host_sockets(host_dir: Path) -> Iterator[tuple[str, ...]]:
    """Unix sockets on the host that anyone may connect to: in /var/tmp, in /run and an
    abstract one (which a network namespace keeps apart)."""
    paths = (str(host_dir / "open.sock"), f"/run/coop-test-{os.getpid()}.sock")
    servers = []
    for path in paths:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen()
        server.setblocking(False)
        servers.append(server)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0coop-test-{os.getpid()}")
    abstract.listen()
    abstract.setblocking(False)
    servers.append(abstract)
    yield (*paths, f"\0coop-test-{os.getpid()}")
    for server in servers:
        with pytest.raises(BlockingIOError):  # nobody got through
            server.accept()
        server.close()
    os.unlink(paths[1])


def test_the_filter_knows_every_call_it_refuses_on_this_node() -> None:
    assert sandbox_filter.unknown() == []
    assert len(sandbox_filter.program()) % 8 == 0 and sandbox_filter.program()


def test_no_namespace_mount_keyring_bpf_ptrace_or_io_uring_at_any_level(
    any_level: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-probe-secret-0123456789")
    monkeypatch.setenv("WEAVIATE_API_KEY", "wv-probe-secret")
    run = any_level.run(probes.program(paths=()), QUICK)
    assert run.exit_code == 0, run
    found = probes.verdicts(run.stdout)
    assert probes.refused_everywhere(found) == [], run.stdout
    if os.geteuid() == 0:
        assert found["uid"] == "65534"  # root's sandboxes run as nobody, at every level


def test_host_sockets_and_dirs_are_not_in_the_view(
    strong: Sandbox, host_sockets: tuple[str, ...]
) -> None:
    run = strong.run(probes.program(sockets=host_sockets), QUICK)
    assert run.exit_code == 0, run
    found = probes.verdicts(run.stdout)
    file_sockets, abstract = host_sockets[:2], host_sockets[2]
    for path in file_sockets:
        assert found[f"socket {path}"] == "FileNotFoundError", run.stdout
    assert found[f"socket {abstract}"] == "ConnectionRefusedError", run.stdout
    for path in probes.HOST_PATHS:
        assert found[f"path {path}"] == "absent", run.stdout


def test_the_view_holds_the_system_and_the_interpreter_only(strong: Sandbox) -> None:
    """The root holds the system's dirs and the interpreter's installation: a virtualenv and
    its base, which may lie elsewhere (a venv in /work of a Python in /root), as README says."""
    run = strong.run("import os\nprint(sorted(os.listdir('/')))\n", QUICK)
    shown = set(eval(run.stdout))
    installed = {Path(strong.python).parts[1]} | {d.parts[1] for d in interpreter_dirs()}
    assert shown <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev"} | {
        "proc",
        "tmp",
        *installed,
    }, run
    run = strong.run("import os\nprint(sorted(os.listdir('/etc')))\n", QUICK)
    assert "passwd" not in run.stdout and "shadow" not in run.stdout, run


PLANT = """
import errno, os, sysconfig
for where in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]}:
    try:
        open(os.path.join(where, "coop_planted.pth"), "w").write("import os\\n")
        print(where, "written")
    except OSError as exc:
        print(where, errno.errorcode[exc.errno])
"""
"""Tries to leave a `.pth` file in the interpreter's installation: Python runs its import
line in every later process of that interpreter, coop's own workers included."""


def test_the_interpreters_installation_cannot_be_written(strong: Sandbox) -> None:
    run = strong.run(PLANT, QUICK)
    tried = run.stdout.splitlines()
    assert len(tried) == 2 and all(line.endswith(" EROFS") for line in tried), run


SCRATCH = """
import errno, os
for where in ("big", "/tmp/big", "/dev/shm/big"):
    written = 0
    try:
        with open(where, "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
                out.flush()
                written += 1
    except OSError as exc:
        print(where, written, errno.errorcode[exc.errno])
    try:
        os.remove(where)
    except OSError:
        pass
"""
"""Fills each place the code may write until refused: MiB written, and the errno."""


def test_scratch_space_is_a_capped_tmpfs_at_the_wrapped_levels(strong: Sandbox) -> None:
    limits = Limits(scratch_mb=8, wall_seconds=20)
    run = strong.run(SCRATCH, limits)
    assert run.exit_code == 0, run
    lines = [line.split() for line in run.stdout.splitlines()]
    assert [line[0] for line in lines] == ["big", "/tmp/big", "/dev/shm/big"], run
    for _, mib, error in lines:
        assert int(mib) <= limits.scratch_mb and error in ("ENOSPC", "EFBIG"), run


def test_scratch_space_is_watched_at_the_process_level(any_level: Sandbox, tmp_path: Path) -> None:
    if any_level.isolation is not Isolation.PROCESS:
        pytest.skip("the wrapped levels' scratch is a tmpfs: see the test above")
    many_files = """
n = 0
while True:
    with open(f"f{n}", "wb") as out:
        out.write(b"x" * (1 << 20))
    n += 1
"""
    limits = Limits(scratch_mb=16, wall_seconds=20)
    run = any_level.run(many_files, limits)
    assert run.scratch_exceeded and run.exit_code != 0, run
    assert run.seconds < 10


CPU_HOGS = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        break
last = 0.0
while True:
    now = time.process_time()
    if now - last > 0.02:
        os.write(1, f"{os.getpid()} {now}\\n".encode())  # one write: lines never mix
        last = now
"""
"""Four processes burning CPU, each saying how much it has used as it goes: each under a
per-process limit for a while, together past it."""


def test_a_cpu_limit_holds_for_the_processes_together(any_level: Sandbox) -> None:
    limits = Limits(cpu_seconds=1, wall_seconds=20, output_bytes=1 << 20)
    run = any_level.run(CPU_HOGS, limits)
    assert run.cpu_exceeded and run.exit_code != 0 and not run.timed_out, run
    used: dict[str, float] = {}
    for line in run.stdout.splitlines():
        with contextlib.suppress(ValueError):  # a line cut short by the kill
            pid, seconds = line.split()
            used[pid] = float(seconds)
    assert len(used) == 4, run.stdout
    total = sum(used.values())  # as the processes themselves measured it
    assert total < limits.cpu_seconds + 0.5, f"{total:.2f}s of CPU under a 1 s limit: {used}"
    assert not strays()


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print("parent leaves")
"""
"""A double-forked daemon in a session of its own, outliving the code that started it."""


def test_every_process_ends_with_the_call_daemons_included(any_level: Sandbox) -> None:
    run = any_level.run(DAEMON, QUICK)
    assert run.stdout == "parent leaves\n" and run.exit_code == 0, run
    assert run.seconds < 3  # the call did not wait for the daemon either
    assert not strays()


def test_a_run_past_its_wall_time_leaves_no_process(any_level: Sandbox) -> None:
    code = DAEMON.replace('print("parent leaves")', "time.sleep(60)")
    run = any_level.run(code, Limits(wall_seconds=1))
    assert run.timed_out, run
    deadline = time.monotonic() + 3
    while strays() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not strays()


def test_the_probes_end_to_end_through_coop_start(
    make_standin: MakeStandIn,
    ray_cluster: Cluster,
    tmp_path: Path,
    host_sockets: tuple[str, ...],
) -> None:
    """The stand-in model asks the `python` tool of a real worker, started by a real `coop
    start`, to run the probes: the model reads a refusal for every one, and no key."""
    prober = probes.Prober(fanout=1, limit=1, code=probes.program(sockets=host_sockets))
    server = make_standin(simulator=prober)
    env = coop_env(ray_cluster, server, WEAVIATE_API_KEY="wv-e2e-secret-0123456789")
    flags = ("--tools", "python", "--workers", "1", "--max-tasks", "2")
    log = tmp_path / "start.log"
    start = spawn_coop("start", unique("Probe the sandbox"), *flags, env=env, log=log)
    assert start.wait(180) == Reason.MAX_TASKS.exit_code, log.read_text()  # two probed tasks
    said = [text for text in prober.outputs if "; sandbox: " in text]
    assert said, prober.outputs
    found = probes.verdicts(said[0])
    assert probes.refused_everywhere(found) == [], said[0]
    if os.geteuid() == 0:
        assert found["uid"] == "65534"
    assert all(found[f"socket {path}"] != "connected" for path in host_sockets), said[0]
    assert all(found[f"path {path}"] == "absent" for path in probes.HOST_PATHS), said[0]
    assert not any(SECRET in text or "wv-e2e-secret" in text for text in prober.outputs)


UNPRIVILEGED = 4242
"""The uid an unprivileged coop runs as in the test below (no passwd entry needed)."""
AS_USER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from coop.sandbox import SandboxUnavailable, choose
programs = [open(path).read() for path in sys.argv[2:]]
found = {}
for level in ("bubblewrap", "namespaces", "process"):
    try:
        box = choose(level)
    except SandboxUnavailable as exc:
        found[level] = str(exc)
        continue
    runs = [box.run(code) for code in programs]
    found[level] = [{"exit": r.exit_code, "stdout": r.stdout, "stderr": r.stderr} for r in runs]
print(json.dumps(found))
"""
"""Runs each program at each level as the calling user and prints what each level said."""


def test_the_probes_hold_when_coop_is_not_root(host_dir: Path) -> None:
    """Without root, bubblewrap and unshare make a user namespace of their own and the
    launcher builds the view inside it: the same bounds, the code seen as the user itself."""
    if os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists():
        pytest.skip("needs root, to become another user, and a system Python that user reaches")
    tmp_path = host_dir  # searchable by that user, unlike pytest's own dirs
    lib = tmp_path / "lib"
    shutil.copytree(Path(sandbox_filter.__file__).parent, lib / "coop")
    for module in (dotenv, pyseccomp):
        source = Path(module.__file__ or "")
        if source.name == "__init__.py":
            shutil.copytree(source.parent, lib / source.parent.name)
        else:
            shutil.copy(source, lib / source.name)
    (tmp_path / "probe.py").write_text(probes.program(sockets=("/run/dbus/system_bus_socket",)))
    (tmp_path / "sweep.py").write_text(PROC_SWEEP.format(host_pid=0, key=SWEEP_KEY))
    for path in (tmp_path, *tmp_path.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    proc = subprocess.run(
        [
            *("setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"),
            *("env", "-i", f"HOME={tmp_path}", "PATH=/usr/bin:/bin", f"OPENAI_API_KEY={SWEEP_KEY}"),
            *(SYSTEM_PYTHON, "-c", AS_USER, str(lib), str(tmp_path / "probe.py")),
            str(tmp_path / "sweep.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    for level in ("bubblewrap", "namespaces"):
        if isinstance(found[level], str):
            continue  # not on this node without root: said why
        verdicts = probes.verdicts(found[level][0]["stdout"])
        assert probes.refused_everywhere(verdicts) == [], found[level]
        assert verdicts["uid"] == str(UNPRIVILEGED), found[level]
        assert all(verdicts[f"path {path}"] == "absent" for path in probes.HOST_PATHS)
    assert not all(isinstance(found[level], str) for level in ("bubblewrap", "namespaces"))
    for level, runs in found.items():  # coop's own key, where the code shares coop's user
        if not isinstance(runs, str):
            assert "found: []" in runs[1]["stdout"], (level, runs[1])


PROC_SWEEP = """
import os, sys
host_pid = {host_pid}
found, refused = [], []
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{{name}}/{{part}}", "rb") as f:
                if {key!r}.encode() in f.read():
                    found.append(f"{{name}}/{{part}}")
        except OSError:
            refused.append(name)
try:
    open(f"/proc/{{host_pid}}/environ", "rb").read()
    print("host environ read")
except OSError as exc:
    print("host environ:", type(exc).__name__)
print("found:", found)
"""
"""Reads every process's environment and command line the code can see, for the key coop
holds, and the environment of the coop process itself by its pid on the host."""
SWEEP_KEY = "sk-proc-sweep-4f9a2c71e0"
"""The key coop holds while the sweep runs."""


def test_no_process_the_code_can_see_gives_it_the_key(
    any_level: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe of our own: not only the code's environment but every /proc/<pid>/environ and
    cmdline it can read — its launcher's, a neighbour's, coop's own — holds no key."""
    monkeypatch.setenv("OPENAI_API_KEY", SWEEP_KEY)
    run = any_level.run(PROC_SWEEP.format(host_pid=os.getpid(), key=SWEEP_KEY), QUICK)
    assert run.exit_code == 0, run
    assert "found: []" in run.stdout, run.stdout
    seen = run.stdout.splitlines()[0]
    assert seen in ("host environ: PermissionError", "host environ: FileNotFoundError"), run
