#!/usr/bin/env python
"""Before and after: a whole objective (planner and workers) run by this working tree and by
earlier commits, side by side, on one private Ray cluster and one stand-in model.

    python -m scripts.before_after                       # this tree against 6030720, 53466da
    python -m scripts.before_after --against HEAD~2      # any commits (repeatable)
    python -m scripts.before_after --smoke               # a minute or so: checks the harness
    python -m scripts.before_after --against main --shapes 2x4,4x4 --planner 50,500

Each run is `coop start OBJECTIVE --workers 0 --max-tasks N` plus W `coop join --concurrency C`,
the stand-in proposing a fixed 3 new tasks per creation call (as scripts/bench.py's whole
objective). Per version and W × C: finished tasks per second in the steady state against the
ideal W × C / latency, planner calls and tokens per executed task, how busy the cores were,
and coop's CPU per finished task over the whole run, start-up included (the Ray cluster's
processes, its worker actors included, and the `coop` commands, sampled from /proc: see
`CoopCpu`; not the stand-in, which runs in this process).
Versions are interleaved per shape, so drift on the machine hits all of them alike.

`--planner SIZES` adds scripts/bench.py's planner-cost runs to the same interleaving: 2 workers ×
4 in flight, the stand-in proposing 3 new tasks per completed task up to SIZE tasks (no task
cap: the run ends when the completion check finds the tree done), so that the planner's calls
per task and the throughput of whole objectives come from one run.

An earlier commit runs from its own `coop/` package, exported with `git archive` into a temp dir,
through `python -c "... from coop.cli import main ..."` started *in* that dir. The working
directory is what makes it work: the driver's sys.path starts with it (before PYTHONPATH and the
editable install), and Ray puts the driver's working directory, not its PYTHONPATH, first on
the sys.path of the job's actors. Every run checks it: the board actor's class must come from
the version's own package. Figures are read from the objective's journal (sqlite; the same
schema in every version), not from the board actor, whose types differ between versions.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import argparse
import contextlib
import json
import math
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

import coop
from coop import cluster
from coop.simulate import Simulator
from coop.testing.cluster import COOP, Coop, local_cluster
from coop.testing.standin import StandIn
from coop.text import objective_id, one_line
from scripts.bench import PLANNER_KINDS, Cpu, steady, table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AGAINST = ("6030720", "53466da34ba27a11f74f5cef7be141f9d8f43ea5")
OTHER_KINDS = frozenset({"execution", "embedding", "synthesis"})
"""Usage kinds that are not the planner's. The planner's kinds are named alike in this tree,
6030720 and 53466da (a replan is a "creation" call in all three); any other kind in a journal
stops the run rather than be silently left out of the planner's figures."""
WRAPPER = "\n".join(
    (
        "import sys",
        "import coop",
        "print(f'coop package: {coop.__file__}', file=sys.stderr, flush=True)",
        "from coop.cli import main",
        "sys.argv[0] = 'coop'",
        "main()",
    )
)
"""An exported commit's `coop` command. The first line of its output names the package it
imported, so its logs show which code ran."""
NEW_ONLY = "step"
"""A journal event only the step ledger (795649c and later) writes: a run of an earlier
version that journals it ran this tree's board, whatever it was started from."""


def journals_steps(code: Path) -> bool:
    """Whether the package at `code` has the step ledger (795649c and later): its own board
    journals NEW_ONLY events, so they prove nothing about which board ran."""
    return f'STEP = "{NEW_ONLY}"' in (code / "types.py").read_text()


class RunFailed(Exception):
    """A run that did not finish, with the reason; the other runs go on."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--against",
        action="append",
        metavar="REV",
        help="an earlier commit to run beside this tree (repeatable; default: "
        f"{' '.join(r[:7] for r in DEFAULT_AGAINST)})",
    )
    p.add_argument("--repo", type=Path, default=ROOT, help="the git repository of the commits")
    p.add_argument("--shapes", default="1x1,1x4,2x4,4x4,8x4", help="workers x in flight each")
    p.add_argument(
        "--planner",
        default="",
        help="planner-cost runs too: tasks in the tree, comma-separated (as the bench: 50,500)",
    )
    p.add_argument("--latency", type=float, default=0.5, help="seconds per chat completion")
    p.add_argument("--repeats", type=int, default=1, help="runs per version and shape (median)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    a = p.parse_args()
    a.against = tuple(a.against or DEFAULT_AGAINST)
    a.seconds, a.least = 8.0, 40  # tasks per run: max(least, ideal rate × seconds)
    if a.smoke:
        a.shapes, a.latency, a.seconds, a.least, a.timeout = "1x2", 0.1, 2.0, 20, 300
    a.shapes = tuple(tuple(int(n) for n in wc.split("x")) for wc in a.shapes.split(",") if wc)
    a.planner = tuple(int(n) for n in a.planner.split(",") if n)
    return a


class Version(Coop):
    """One version of coop as a command, with its own state and log dirs on the shared cluster
    and stand-in. `cwd` is where its processes start (an export's dir: see the module's doc),
    `code` the package its actors must run."""

    def __init__(
        self,
        label: str,
        command: list[str],
        cwd: Path | None,
        code: Path,
        address: str,
        server: StandIn,
        root: Path,
    ) -> None:
        (root / "logs").mkdir(parents=True)
        super().__init__(address, server, root / "state", root / "logs")
        self.label, self.command, self.cwd, self.code = label, command, cwd, code
        self.state = root / "state"  # COOP_STATE_DIR: journals in state/journal/<oid>.db
        if cwd is not None:
            self.env["PYTHONPATH"] = str(cwd)  # the driver's path; the cwd is what Ray passes on

    def log_tail(self, lines: int = 15) -> str:
        """The end of this version's newest log, for a run that failed."""
        logs = sorted(self.logs.glob("*.log"))
        text = logs[-1].read_text(errors="replace").splitlines()[-lines:] if logs else []
        return "\n".join(f"    {line}" for line in text)


@dataclass
class Run:
    """What one run's journal says, plus the machine's CPU over its steady state."""

    finished: int
    rate: float
    calls: dict[str, float]  # planner calls per executed task, by kind
    tokens: float  # planner tokens per executed task
    busy: float
    ended: str
    executions: float = 0.0  # execution calls per task: the same work a task in every version
    kinds: set[str] = field(default_factory=set)  # the journal's event kinds
    board: str = ""  # the file the board actor's class came from
    cpu: float = float("nan")  # coop's CPU seconds per finished task over the whole run

    @property
    def planner_calls(self) -> float:
        """Planner calls per executed task, every kind."""
        return sum(self.calls.values())


def git(repo: Path, *args: str) -> str:
    """A git command's output; its error as one line (a mistyped --against, say)."""
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"git {' '.join(args)}: {out.stderr.strip().splitlines()[-1]}")
    return out.stdout.strip()


def export(repo: Path, rev: str, into: Path) -> Path:
    """`git archive REV coop` unpacked into `into`: the commit's package, nothing else."""
    into.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(repo), "archive", rev, "coop"], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {rev} coop failed")
    return into / "coop"


def check_cli(v: Version) -> str:
    """Before any run: the version's `start` and `join` take the flags a run passes, and an
    export's command imports the export's package. Returns the package the command names."""
    package = ""
    for sub, flags in (("start", ("--workers", "--max-tasks")), ("join", ("--concurrency",))):
        out = subprocess.run(
            [*v.command, sub, "--help"],
            cwd=v.cwd,
            env=v.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        missing = [f for f in flags if f not in out.stdout]
        if out.returncode or missing:
            raise SystemExit(
                f"{v.label}: `coop {sub} --help` exited {out.returncode}, lacking "
                f"{missing or 'nothing'}:\n{out.stderr[-2000:]}"
            )
        named = [ln for ln in out.stderr.splitlines() if ln.startswith("coop package: ")]
        package = named[0].removeprefix("coop package: ") if named else ""
        if v.cwd is not None and not Path(package).is_relative_to(v.code):
            raise SystemExit(f"{v.label}: its command imported {package!r}, not {v.code}")
    return package


def board_code(oid: str) -> Path:
    """The file the objective's board actor took its class from: where the actor's worker
    process imported coop, which is what decides which code ran."""

    def where(actor: Any) -> str:  # runs inside the actor; nested, so pickled by value
        import sys

        return str(sys.modules[type(actor).__module__].__file__)

    board = ray.get_actor(f"coop:{oid}:board")  # another job's actor: its handle checks no
    return Path(ray.get(board.__ray_call__.remote(fn=where), timeout=60))  # positions, so a kw


def kill_actors(oid: str) -> None:
    """A finished objective's actors (board, memory) are detached: end them, so that runs do
    not pile up processes on a 2-core machine."""
    for name in cluster.actor_names():
        if name.startswith(f"coop:{oid}:"):
            with contextlib.suppress(ValueError):  # gone meanwhile
                ray.kill(ray.get_actor(name))


def read_journal(path: Path, cpu: Cpu) -> Run:
    """The run's figures from its journal, the one record every version writes alike: events
    (seq, at, kind, data JSON); `completed` carries `at`, `usage` carries kind, prompt and
    completion tokens, `stopping` the reason."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT at, kind, data FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    finished: list[float] = []
    calls: Counter[str] = Counter()
    tokens, executions, ended, kinds = 0, 0, "?", set()
    for at, kind, raw in rows:
        kinds.add(kind)
        data = json.loads(raw)
        if kind == "completed":
            finished.append(float(data.get("at", at)))
        elif kind == "usage":
            if data["kind"] in PLANNER_KINDS:
                calls[data["kind"]] += 1
                tokens += data["prompt"] + data["completion"]
            elif data["kind"] == "execution" and not data.get("estimated"):
                executions += 1  # (an estimate stands for a call cut off by a lease's expiry)
            elif data["kind"] not in OTHER_KINDS:
                raise RunFailed(f"a usage kind this reader does not know: {data['kind']!r}")
        elif kind == "stopping" and ended == "?":
            ended = data.get("reason", "?")
    if len(finished) < 10:
        raise RunFailed(f"only {len(finished)} task(s) finished")
    rate, since, until = steady(finished)
    done = len(finished)
    return Run(
        finished=done,
        rate=rate,
        calls={k: calls[k] / done for k in PLANNER_KINDS},
        tokens=tokens / done,
        busy=cpu.busy(since, until),
        ended=ended,
        executions=executions / done,
        kinds=kinds,
    )


class CoopCpu:
    """CPU seconds spent by this process's descendants: the Ray cluster it started (GCS,
    raylet, the workers running coop's actors) and the `coop` commands it spawned. Not this
    process's own time, which holds the stand-in model and the samplers, nor anything else on
    the machine: the figure holds under other load.

    Sampled from /proc in the background, each process's last reading kept after it ends. A
    reading of the tree at the end alone (what this harness did before) misses every process
    that ended during the run and was not reaped by a process of the tree: Ray's worker
    processes, the worker actors among them, where most of a task's CPU goes; they ended
    with the run's `coop join`, and their time was counted nowhere."""

    def __init__(self, every: float = 0.2) -> None:
        self._seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)
        self._thread.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self._sample()

    def _sample(self) -> None:
        parents: dict[int, list[int]] = {}
        times: dict[int, tuple[int, float]] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # ended meanwhile
                continue
            rest = text[text.rindex(")") + 2 :].split()
            pid = int(stat.parent.name)
            parents.setdefault(int(rest[1]), []).append(pid)
            times[pid] = (int(rest[19]), (int(rest[11]) + int(rest[12])) / tick)  # start, u+s
        todo = list(parents.get(os.getpid(), []))
        with self._lock:
            while todo:
                pid = todo.pop()
                started, spent = times[pid]
                self._seen[(pid, started)] = spent
                todo += parents.get(pid, [])

    def total(self) -> float:
        """CPU seconds of every descendant seen so far, read afresh."""
        self._sample()
        with self._lock:
            return sum(self._seen.values())

    def stop(self) -> None:
        self._stop.set()


def one_run(
    v: Version,
    w: int,
    c: int,
    tasks: int,
    server: StandIn,
    cpu: Cpu,
    timeout: float,
    coop_cpu: CoopCpu,
    tree: int = 0,
) -> Run:
    """`coop start --workers 0` and W `coop join`, as scripts/bench.py's whole objective (or,
    with `tree`, its planner cost: a tree of that many tasks, no cap), then the checks that
    the version's own code ran, then its journal's figures."""
    server.simulator = (
        Simulator(fanout=3, limit=tree) if tree else Simulator(per_call=3, limit=10**6)
    )
    objective = f"Before and after {v.label} {w}x{c} {time.time_ns()}"
    oid = objective_id(objective)
    deadline = time.monotonic() + timeout
    spent = coop_cpu.total()
    start = v.spawn("start", objective, "--workers", "0", "--max-tasks", str(tasks))
    procs = [start]
    try:
        while f"coop:{oid}:board" not in cluster.actor_names():
            if start.poll() is not None:
                raise RunFailed(f"`coop start` exited {start.returncode} before its board showed")
            if time.monotonic() > deadline:
                raise RunFailed("no board within the timeout")
            time.sleep(0.1)
        procs += [v.spawn("join", oid, "--concurrency", str(c)) for _ in range(w)]
        try:
            start.wait(max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            raise RunFailed(f"`coop start` still running after {timeout:.0f} s") from None
        v.stop_all(procs[1:])
        spent = coop_cpu.total() - spent
        code = board_code(oid)
        if not code.is_relative_to(v.code):
            raise SystemExit(f"{v.label}: its board actor ran {code}, not code from {v.code}")
        run = read_journal(v.state / "journal" / f"{oid}.db", cpu)
        if v.cwd is not None and NEW_ONLY in run.kinds and not journals_steps(v.code):
            raise SystemExit(f"{v.label}: its journal has {NEW_ONLY!r} events: not its own board")
        run.board, run.cpu = str(code), spent / run.finished
        return run
    finally:
        v.stop_all([p for p in procs if p.poll() is None], grace=10)
        kill_actors(oid)


def runs_of(a: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(workers, in flight, tree size or 0) of each kind of run: the whole objectives, then the
    planner-cost trees, always 2 × 4 as in scripts/bench.py."""
    return [(w, c, 0) for w, c in a.shapes] + [(2, 4, size) for size in a.planner]


def shape_of(w: int, c: int, tree: int) -> str:
    return f"{w}×{c}" + (f", tree of {tree}" if tree else "")


def median_run(runs: list[Run]) -> Run:
    """The median of each figure over repeats."""

    def med(values: list[float]) -> float:
        real = [x for x in values if not math.isnan(x)]
        return statistics.median(real) if real else float("nan")

    return Run(
        finished=int(statistics.median(r.finished for r in runs)),
        rate=med([r.rate for r in runs]),
        calls={k: med([r.calls[k] for r in runs]) for k in PLANNER_KINDS},
        tokens=med([r.tokens for r in runs]),
        busy=med([r.busy for r in runs]),
        cpu=med([r.cpu for r in runs]),
        ended=", ".join(sorted({r.ended for r in runs})),
        kinds=set().union(*(r.kinds for r in runs)),
    )


def row(shape: str, label: str, ideal: float, runs: list[Run], failures: list[str]) -> list[str]:
    if not runs:
        return [shape, label, "**failed**: " + "; ".join(failures), *[""] * 8]
    m = median_run(runs)
    each = " / ".join(f"{m.calls[k]:.2f}" for k in PLANNER_KINDS)
    failed = f" ({len(failures)} failed)" if failures else ""
    return [
        shape,
        label,
        f"{m.finished}{failed}",
        f"{m.rate:.1f}",
        f"{m.rate / ideal:.0%}",
        f"{m.planner_calls:.2f}",
        each,
        f"{m.tokens:.0f}",
        f"{m.busy:.0%}",
        f"{m.cpu * 1000:.0f} ms",
        m.ended,
    ]


def main() -> int:
    a = parse()
    began = time.monotonic()
    server = StandIn(latency=a.latency)
    server.start()
    try:
        capacity = server.capacity()
        with tempfile.TemporaryDirectory(prefix="coop-before-after-") as tmp, local_cluster() as c:
            versions: list[Version] = []
            notes: list[str] = []
            for i, rev in enumerate(a.against):
                full = git(a.repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
                short = git(a.repo, "rev-parse", "--short", full)
                code = export(a.repo, full, Path(tmp) / f"v{i}-{short}" / "src")
                command = [sys.executable, "-c", WRAPPER]
                v = Version(short, command, code.parent, code, c.address, server, code.parents[1])
                versions.append(v)
                subject = git(a.repo, "log", "-1", "--format=%s", full)
                notes.append(f"- `{short}`: {one_line(subject, 90)}")
            head = git(a.repo, "rev-parse", "--short", "HEAD")
            dirty = git(a.repo, "status", "--porcelain", "--", "coop")
            label = f"this tree ({head}{' + changes' if dirty else ''})"
            here = Path(coop.__file__).parent
            tree_root = Path(tmp) / "this-tree"
            versions.append(Version(label, [str(COOP)], None, here, c.address, server, tree_root))
            notes.append(f"- {label}: `{COOP}`, package {here}")
            for v in versions:
                package = check_cli(v)
                if package:
                    print(f"{v.label}: `coop --help` ran {package}", flush=True)
            cpu, coop_cpu = Cpu(), CoopCpu()
            results: dict[tuple[str, str], tuple[list[Run], list[str]]] = {}
            turn = 0
            try:
                for w, cc, tree in runs_of(a):
                    ideal = w * cc / a.latency
                    tasks = 100_000 if tree else max(a.least, int(ideal * a.seconds))
                    key = shape_of(w, cc, tree)
                    for _ in range(a.repeats):
                        order = versions[turn % len(versions) :] + versions[: turn % len(versions)]
                        turn += 1  # no version is always the first after a pause
                        for v in order:
                            runs, failures = results.setdefault((key, v.label), ([], []))
                            t = time.monotonic()
                            try:
                                run = one_run(
                                    v, w, cc, tasks, server, cpu, a.timeout, coop_cpu, tree
                                )
                            except RunFailed as exc:
                                failures.append(str(exc))
                                print(f"{v.label} {key}: failed: {exc}\n{v.log_tail()}")
                                continue
                            runs.append(run)
                            print(
                                f"{v.label} {key}: {run.finished} tasks, {run.rate:.1f}/s of "
                                f"{ideal:.0f}/s ideal, ended {run.ended}, "
                                f"{time.monotonic() - t:.0f} s, planner calls/task "
                                f"{run.planner_calls:.2f}",
                                flush=True,
                            )
            finally:
                cpu.stop()
                coop_cpu.stop()
    finally:
        server.stop()
    rows = []
    for w, cc, tree in runs_of(a):
        ideal = w * cc / a.latency
        for v in versions:
            runs, failures = results.get((shape_of(w, cc, tree), v.label), ([], ["not run"]))
            rows.append(
                row(f"{shape_of(w, cc, tree)} ({ideal:.0f}/s)", v.label, ideal, runs, failures)
            )
    header = [
        "W×C (ideal)",
        "version",
        "finished",
        "tasks/s",
        "of ideal",
        "planner calls/task",
        "creation / prioritization / check",
        "planner tokens/task",
        "cores busy",
        "coop CPU/task",
        "ended",
    ]
    print()
    print(f"latency {a.latency} s a chat completion; 3 new tasks a creation call ", end="")
    print("(planner cost: 3 a completed task, up to the tree's size); ", end="")
    print(f"repeats {a.repeats}; stand-in answers {capacity:.0f} requests/s when nothing sleeps")
    print("\n".join(notes))
    print()
    print(table(header, rows))
    print()
    for v in versions:
        mine = [r for (_, label), (runs, _) in results.items() if label == v.label for r in runs]
        boards = ", ".join(sorted({r.board for r in mine})) or "?"
        step = sum(NEW_ONLY in r.kinds for r in mine)
        executions = statistics.median(r.executions for r in mine) if mine else math.nan
        print(f"- {v.label}: board actor's class from {boards}; runs whose journal has ", end="")
        print(
            f"{NEW_ONLY!r} events: {step} of {len(mine)}; {executions:.2f} execution calls a task"
        )
    print(f"({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
