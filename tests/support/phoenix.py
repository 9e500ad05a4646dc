"""A real Arize Phoenix (`phoenix serve`) on loopback: an OTLP/HTTP receiver with its own REST
API to read back what it stored. Its ports and working dir are its own variables'."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import closed_port, wait_for

GIVEN = "COOP_TEST_PHOENIX"
"""The `phoenix` command to use, perhaps still being installed: `.ci/run` installs Phoenix in a
venv of its own beside the tests, links the command here once it is in, and copies the
install's log to `<command>.failed` if it fails."""
INSTALL_WAIT = 600.0
"""Seconds a test waits for that install (it takes about 50 s)."""


class Phoenix:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as reply:
            return json.load(reply)

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span Phoenix stored of one trace (hex id), through its REST API."""
        out: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = self.get(f"/v1/projects/default/spans?limit=1000&trace_id={trace_id}{cursor}")
            out += page["data"]
            if not page.get("next_cursor"):
                return out
            cursor = f"&cursor={page['next_cursor']}"


def command() -> Path | None:
    """Where the `phoenix` command is (or will be, with GIVEN set); None: not installed."""
    if given := os.environ.get(GIVEN):
        return Path(given)
    beside = Path(sys.executable).with_name("phoenix")
    if beside.exists():
        return beside
    found = shutil.which("phoenix")
    return Path(found) if found else None


def available() -> bool:
    return command() is not None


class Boot:
    """`phoenix serve` starting in the background, on free loopback ports, its database in
    `workdir`, at the lowest CPU priority (its start is some 15 s of one core: it takes what
    the tests leave idle), as soon as its command is installed."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        port = closed_port()
        self.env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(closed_port()),
            "PHOENIX_WORKING_DIR": str(workdir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        self.server = Phoenix(f"http://127.0.0.1:{port}", workdir / "phoenix.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.failed = ""
        self._lock = threading.Lock()
        self._started = threading.Thread(target=self._start, name="phoenix-boot", daemon=True)
        self._started.start()

    def _start(self) -> None:
        failed = Path(f"{self.path}.failed")
        deadline = time.monotonic() + INSTALL_WAIT
        while not self.path.exists() and not failed.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not self.path.exists():
            said = failed.read_text()[-2000:] if failed.exists() else "still not there"
            self.failed = f"{self.path} ({GIVEN}) not installed:\n{said}"
            return
        with self._lock, self.server.log.open("w") as out:
            self.proc = subprocess.Popen(
                ["nice", "-n", "19", str(self.path), "serve"],
                env=self.env,
                cwd=self.server.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> Phoenix:
        """The server, once it answers; a failure that says why if it does not."""
        self._started.join(INSTALL_WAIT + 5)
        assert self.proc is not None, self.failed or "Phoenix did not start"
        proc, server = self.proc, self.server

        def up() -> bool:
            return proc.poll() is not None or _healthy(server)

        wait_for(up, 120, "Phoenix", server.log.read_text)
        assert proc.poll() is None, server.log.read_text()
        return server

    def stop(self) -> None:
        with self._lock:
            proc = self.proc
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _healthy(server: Phoenix) -> bool:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        time.sleep(0.2)
        return False
