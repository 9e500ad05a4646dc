"""The README's commands, run as a new user would run them."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ray.cluster_utils import Cluster

from coop.testing import raylets
from tests.support.procs import ROOT, coop_env, wait_for

BIN = Path(sys.executable).parent
"""Where `coop` and `ray` are installed: first on PATH, activated virtualenv or not."""


def readme_block(heading: str, index: int = 0) -> list[str]:
    """The commands of the `index`-th bash block after `heading`, without comments."""
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)[index]
    commands = [line.split("   #", 1)[0].strip() for line in block.splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_cluster_steps_work_verbatim_from_an_empty_home(tmp_path: Path) -> None:
    """A fresh HOME (no ~/.ray/auth_token, no ~/.coop): the head's commands, then a worker's
    `coop join`, end the objective as done. Only the address is this machine's (loopback, a
    free port); the cluster's processes are marked so that exactly they are stopped after."""
    home = tmp_path / "home"
    home.mkdir()
    root = Path(tempfile.mkdtemp(prefix="coop-rd-"))  # short: Ray's socket paths live under it
    port = free_port()
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "RAY_TMPDIR": str(root / "ray"),  # not the session's /tmp/ray
        raylets.MARKER: str(root),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback only
        "COOP_LLM": "offline",  # no key here: the simulated model
        "PYTHONUNBUFFERED": "1",
    }
    head = readme_block("## On a cluster", 0)
    node = readme_block("## On a cluster", 1)
    assert "ray get-auth-token --generate" in head[0] and "ray start --head" in head[1]
    assert head[2].startswith("coop start") and node[1].startswith("coop join")

    def here(command: str) -> str:
        return command.replace("<head-ip>", "127.0.0.1").replace("6379", str(port))

    try:
        for command in head[:2]:
            done = subprocess.run(
                here(command), shell=True, env=env, capture_output=True, text=True, timeout=180
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        # Ray writes it readable by all (0644); the README's umask keeps it its owner's
        assert (home / ".ray" / "auth_token").stat().st_mode & 0o077 == 0
        log = (tmp_path / "start.log").open("w")
        start = subprocess.Popen(
            here(head[2]), shell=True, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        banner = "add workers with: coop join"  # as a person would, wait for it to be up
        wait_for(lambda: banner in (tmp_path / "start.log").read_text(), 120, "coop start")
        joined = subprocess.run(
            here(node[1]), shell=True, env=env, capture_output=True, text=True, timeout=240
        )
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert start.wait(240) == 0, (tmp_path / "start.log").read_text()
        out = (tmp_path / "start.log").read_text()
        assert "finished (done)" in out and "Traceback" not in out + joined.stderr
        assert list((home / ".coop" / "journal").glob("plan-a-community-garden-*.db"))
    finally:
        raylets.down(root)
        shutil.rmtree(root, ignore_errors=True)


def readme_python(heading: str) -> str:
    """The first python block after `heading`, as written."""
    section = (ROOT / "README.md").read_text().split(heading, 1)[1]
    blocks: list[str] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return blocks[0]


def test_the_python_example_runs_verbatim(ray_cluster: Cluster, tmp_path: Path) -> None:
    """The README's "Use from Python" example, as written, in a fresh interpreter with a fresh
    state dir: it runs its objective to the end, its own function is called as a tool, and it
    prints the typed answer's steps."""
    script = tmp_path / "example.py"
    script.write_text(readme_python("## Use from Python"))
    env = coop_env(ray_cluster, COOP_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].endswith("max-tasks 5 results"), done.stdout
    called = int(lines[1].removeprefix("frost_dates called ").removesuffix(" times"))
    assert called >= 1, done.stdout  # the script's own function, called by worker actors
    assert len(lines) >= 4 and lines[3].startswith("- ") and lines[3].endswith(" weeks)")
    assert "Traceback" not in done.stderr
