"""A real Arize Phoenix (`phoenix serve`) on loopback: an OTLP/HTTP receiver with its own REST
API to read back what it stored. Its ports and working dir are its own variables'."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import closed_port, wait_for

PHOENIX = Path(sys.executable).with_name("phoenix")
"""The `phoenix` command beside the running interpreter (.ci/run installs arize-phoenix)."""


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


def available() -> bool:
    return PHOENIX.exists() or shutil.which("phoenix") is not None


def boot(workdir: Path) -> tuple[subprocess.Popen[bytes], Phoenix]:
    """`phoenix serve` starting on free loopback ports, its database in `workdir`, at the
    lowest CPU priority: its start (some 15 s of one core) takes what the tests leave idle."""
    port, grpc = closed_port(), closed_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = workdir / "phoenix.log"
    command = str(PHOENIX) if PHOENIX.exists() else "phoenix"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["nice", "-n", "19", command, "serve"],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, Phoenix(f"http://127.0.0.1:{port}", log)


def ready(proc: subprocess.Popen[bytes], server: Phoenix) -> Phoenix:
    """`server` once it answers (it is still starting, or has failed: then say why)."""
    wait_for(
        lambda: proc.poll() is not None or _healthy(server), 120, "Phoenix", server.log.read_text
    )
    assert proc.poll() is None, server.log.read_text()
    return server


def stop(proc: subprocess.Popen[bytes]) -> None:
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
