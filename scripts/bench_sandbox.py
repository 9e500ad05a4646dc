#!/usr/bin/env python
"""What every `python` tool call pays for its sandbox: the wall time of a call that only
prints, per level, for this tree and — with `--before REV` — for the sandbox of an earlier
commit, interleaved in one run so both meet the same machine.

    python -m scripts.bench_sandbox                       # this tree
    python -m scripts.bench_sandbox --before 68876d8      # beside an earlier commit's sandbox

An earlier commit's `coop/` is taken with `git archive` into a temporary dir and timed in a
process of its own (PYTHONPATH), so neither version's code leaks into the other's figures.
Under root, the `process` level runs code as nobody since this tree, which cannot reach a
Python under /root: there it is timed with the system's /usr/bin/python3 (said in the row).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LEVELS = ("bubblewrap", "namespaces", "process")
"""The levels timed, when the node has them."""
SYSTEM_PYTHON = "/usr/bin/python3"
"""The interpreter the `process` level is timed with when NOBODY cannot reach coop's own."""
TIMER = """
import json, sys, time
from coop import sandbox
level, calls, python = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    box = sandbox.choose(level)
except sandbox.SandboxUnavailable as exc:
    if level != "process" or not python:
        print(json.dumps({"error": str(exc)}))
        raise SystemExit(0)
    box = sandbox.ProcessSandbox(python=python)
seconds = []
for _ in range(calls):
    began = time.perf_counter()
    run = box.run("print('ok')")
    seconds.append(time.perf_counter() - began)
    assert run.stdout == "ok\\n", run
print(json.dumps({"seconds": seconds, "python": getattr(box, "python", sys.executable)}))
"""
"""Times `calls` runs of one level in a fresh process of the version on PYTHONPATH."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="", help="an earlier commit to time beside this tree")
    p.add_argument("--calls", type=int, default=30, help="calls per level, per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the versions")
    return p.parse_args()


def extract(rev: str, into: Path) -> Path:
    """`coop/` as it was at `rev`."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "coop"], check=True, capture_output=True
    ).stdout
    tar = into / "coop.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as files:
        files.extractall(into, filter="data")
    return into


def time_level(level: str, calls: int, path: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else ""
    out = subprocess.run(
        [sys.executable, "-c", TIMER, level, str(calls), python],
        env=env,
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return found


def rows(before: str, calls: int, rounds: int) -> list[list[str]]:
    """One table row per level and version: median and p90 of a call that only prints."""
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="coop-bench-sandbox-") as tmp:
        versions = {"this tree": here}
        if before:
            versions[f"at {before}"] = extract(before, Path(tmp))
        seconds: dict[tuple[str, str], list[float]] = {}
        notes: dict[tuple[str, str], str] = {}
        for _ in range(rounds):
            for level in LEVELS:
                for name, path in versions.items():
                    found = time_level(level, calls, path)
                    if "error" in found:
                        notes[(level, name)] = str(found["error"])
                        continue
                    seconds.setdefault((level, name), []).extend(found["seconds"])  # type: ignore[arg-type]
                    if found["python"] != sys.executable:
                        notes[(level, name)] = f"code on {found['python']}"
    table = []
    for level in LEVELS:
        for name in versions:
            times = sorted(seconds.get((level, name), []))
            if not times:
                table.append([f"sandbox: {level} call, {name}", "-", notes.get((level, name), "")])
                continue
            p90 = times[int(len(times) * 0.9) - 1]
            result = f"{statistics.median(times) * 1000:.0f} / {p90 * 1000:.0f} ms"
            table.append([f"sandbox: {level} call, {name}", result, notes.get((level, name), "")])
    return table


def main() -> int:
    a = parse()
    table = rows(a.before, a.calls, a.rounds)
    print("| measure | median / p90 | note |\n|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
