"""Network partitions: a worker node, then the planner, cut off from the head for longer than
their leases, then reconnected.

Each test builds hosts in network namespaces on a private bridge (tests/support/netns.py): a
Ray head started with `ray start --head --node-ip-address 10.203.0.1`, and a Ray worker node
joined to it across the veth (`ray start --address 10.203.0.1:6379 --node-ip-address
10.203.0.2`), with Ray's token authentication on and every other Ray setting at its default,
as the README sets a cluster up. The real `coop` commands run inside the hosts, each attached
to its own host's raylet. Every host has its own stand-in model server on its own loopback:
the cut separates a host from the cluster, not from its model (as with a hosted model API),
so a partitioned worker finishes its task while cut off and reports it late. The state dir is
shared (namespaces split the network, not the filesystem); the journal is read from its file.

Set COOP_KEEP_PARTITION_LOGS=1 to keep each test's dir (coop and Ray logs, journal, memory).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coop.text import objective_id
from tests.support import netns
from tests.support.procs import ROOT, wait_for

COOP = Path(sys.executable).with_name("coop")
RAY = Path(sys.executable).with_name("ray")
RAYLETS = ROOT / "coop" / "testing" / "raylets.py"
GCS_PORT = 6379  # each host has its own ports: nothing else listens in these namespaces
MODEL_PORT = 8000
LATENCY = 0.8  # seconds per chat completion: paces the run, so that it outlasts the cut
LEASE_TTL = 5.0
WORKER_CUT = 12.0
"""Over two lease TTLs, and short of the ~20 s after which Ray's gRPC servers drop a silent
connection (keepalive 10 s + 20 s) while its clients wait 300 s + 120 s to notice: a longer cut
leaves the cut-off side waiting on a half-open connection (see the planner test)."""
CLAIM_TTL = 8.0
"""The planner claim's TTL (`--planner-ttl`): a cut of the planner's host outlasts it."""
FENCED_WITHIN = 20.0
"""Seconds after the heal by which the old planner must have stopped. It needs no heal: a claim
it could not renew for a TTL is lost, by its own clock, so it stops while still cut off; this
leaves its exit (Ray's shutdown, over a connection just restored) room."""
PLANNER_FLAGS = (
    *("--workers", "0", "--max-tasks", "100"),
    *("--lease-ttl", str(LEASE_TTL), "--planner-ttl", str(CLAIM_TTL)),
)
"""Planning only (workers join apart), short leases and claims, and room for every task."""
TRACEBACK = "Traceback (most recent call last)"
FENCED = re.compile(
    r"task #(\d+): (?:lease lost before completion; result discarded"
    r"|the lease went to another worker; this attempt stops)"
)
"""A worker's line for a task whose lease it lost: its late completion was refused as stale, or
it learnt of the loss mid-task and stopped the attempt."""

Events = list[tuple[int, float, str, dict[str, Any]]]
"""The journal's events: (seq, at, kind, data)."""

QUERY = """
import json, sys
import ray
from coop import cluster, registry
cluster.connect(None, start_local=False)
board = registry.find(sys.argv[1])
snap = board.snapshot()
memory = cluster.existing_actor(board.objective_id, "memory")
print(json.dumps({
    "state": snap.state.value,
    "reason": snap.reason.value if snap.reason else None,
    "leased": [[lease.task.id, lease.token, lease.worker] for lease in snap.leased],
    "pending": len(snap.pending),
    "completed": snap.completed,
    "dead": len(snap.dead),
    "unplanned": snap.unplanned,
    "usage": {k: [u.calls, u.prompt_tokens, u.completion_tokens] for k, u in snap.usage.items()},
    "results": [[r.task_id, r.worker, r.seq] for r in board.results()],
    "memory": ray.get(memory.task_ids.remote()) if memory is not None else None,
}))
"""
"""Run in the head host once the run has ended: the live board's and memory's own view."""
BILL = """
import json, urllib.request
with urllib.request.urlopen("http://127.0.0.1:%d/_stats", timeout=10) as r:
    print(json.dumps(json.load(r)["usage"]))
"""
"""Run in a host: the tokens its stand-in served."""


@pytest.fixture(autouse=True)
def _namespaces_allowed() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"partition tests: {reason}")


# --- the tests ------------------------------------------------------------------------------


def test_a_partitioned_worker_loses_its_lease_and_works_again_after_healing() -> None:
    """A worker node is cut off mid-task for 12 s: its lease expires, the head's worker redoes
    the task, the late completion is refused, and once healed the node's worker leases and
    completes tasks again. Nothing is lost or recorded twice; usage adds up."""
    objective = "Plan a partition drill for a small team"
    oid = objective_id(objective)
    with lab("head", "node") as lb:
        lb.start(tasks=44)
        start = lb.plan("head", "start", objective)
        cut_off = lb.coop("node", "join-node", "join", oid, "--node", lb.nodes["node"])
        lb.coop("head", "join-head", "join", oid, "--node", lb.nodes["head"])
        node = _worker_name(lb, "join-node")

        def working() -> bool:  # it has done a couple of tasks, and holds one now
            events = lb.events(oid)
            return len(_completed_by(events, node)) >= 2 and bool(_held(events, node))

        wait_for(working, 60, f"{node} to be working", lb.tails)
        lb.net.cut("node")
        cut = time.time()
        time.sleep(WORKER_CUT)
        lb.net.heal("node")
        healed = time.time()

        code = _exit(start, 150)
        joined = _exit(cut_off, 60)
        stacks = _still_running(start=start, join_node=cut_off)
        lb.stop_all()
        events = lb.events(oid)
        why = _Explain(lb, events, cut, healed, stacks)
        assert code == 0 and joined is not None, why
        board, bill = lb.board(oid), lb.bill()

        # the run ended as runs do, and every task has exactly one result, everywhere
        assert board["reason"] == "done", why
        _assert_one_result_each(lb, oid, events, board, why)

        # the node's lease expired during the cut, and another worker finished that task
        lost = _expired_while_cut(events, node, cut, healed)
        assert lost, why
        final = {d["id"]: d for d in _completed(events)}
        for tid, token in lost.items():
            assert final[tid]["worker"] != node and final[tid]["token"] > token, why
        # what it did on them while cut off was fenced out: refused as stale, or abandoned
        fenced = {int(t) for t in FENCED.findall(_read(lb.log("join-node")))}
        assert set(lost) <= fenced, why

        # healed, it worked again (accepted completions), and left when the objective ended
        assert [d for at, d in _completed_by(events, node) if at > healed], why
        assert joined == 0 and "objective finished" in _read(lb.log("join-node")), why

        # nothing held at the end; usage adds up, and is what the model servers billed
        assert board["leased"] == [] and board["state"] == "finished", why
        _assert_usage_adds_up(events, board, why)
        _assert_billed(events, bill, why)


def test_a_partitioned_planner_is_replaced_and_fenced_out() -> None:
    """The planner's host is cut off for longer than the planner claim's TTL: the standby on
    the head takes over and finishes the objective; the old planner, unable to renew its
    claim, stops by itself with one line. No completion is planned twice, and every one is
    planned from."""
    objective = "Write a field guide to moss"
    oid = objective_id(objective)
    with lab("head", "plan") as lb:
        lb.start(tasks=18)  # 4 done before the cut; most of the rest planned by the standby
        old = lb.plan("plan", "start-old", objective)
        standby = lb.coop("head", "standby", "start", objective, "--standby", "--workers", "0")
        lb.coop("head", "join-head", "join", oid, "--node", lb.nodes["head"])
        wait_for(lambda: "standing by" in _read(lb.log("standby")), 60, "the standby", lb.tails)
        wait_for(lambda: len(_completed(lb.events(oid))) >= 4, 60, "completions", lb.tails)

        lb.net.cut("plan")
        cut = time.time()
        old_name = _claims(lb.events(oid))[0]

        def took_over() -> list[str]:
            return [n for n in _claims(lb.events(oid)) if n != old_name]

        wait_for(took_over, CLAIM_TTL + 20, "the standby to take over", lb.tails)
        time.sleep(max(0.0, cut + CLAIM_TTL + 1 - time.time()))  # cut for longer than the TTL
        lb.net.heal("plan")
        healed = time.time()

        code = _exit(standby, 150)
        fenced = _exit(old, max(1.0, healed + FENCED_WITHIN - time.time()))
        stacks = _still_running(standby=standby, old_planner=old)
        lb.stop_all()
        events = lb.events(oid)
        why = _Explain(lb, events, cut, healed, stacks)
        assert code == 0, why
        board = lb.board(oid)

        # the standby took over while the old planner was cut off, and finished the run
        new_name = took_over()[0]
        claims = [
            (at, d["instance"])
            for _, at, k, d in events
            if k == "planner" and d["action"] == "claimed"
        ]
        assert [n for at, n in claims if cut < at < healed] == [new_name], why
        assert board["reason"] == "done" and board["state"] == "finished", why
        assert board["leased"] == [], why
        _assert_one_result_each(lb, oid, events, board, why)
        _assert_usage_adds_up(events, board, why)

        # no completion was planned twice, and every one was planned from
        planned = [s for _, _, k, d in events if k == "added" for s in d.get("planned") or ()]
        twice = sorted(s for s, n in Counter(planned).items() if n > 1)
        assert not twice, f"completions planned twice: {twice}\n{why}"
        assert sorted(planned) == list(range(board["completed"])), why

        # the old planner stopped by itself, its claim lapsed: one line, non-zero, no traceback
        assert fenced is not None, (
            f"the old planner still ran {FENCED_WITHIN:g}s after the heal\n{why}"
        )
        said = _read(lb.log("start-old"))  # coop's lines, and Ray's it streams ("(raylet) ...")
        errors = [line for line in said.splitlines() if line.startswith("coop: error:")]
        assert fenced != 0 and TRACEBACK not in said, why
        assert len(errors) == 1 and re.search(r"took over planning|lost its claim", errors[0]), why


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Lab:
    """A Ray cluster across namespace hosts (the first is the head), its files in `root`."""

    net: netns.Network
    root: Path
    nodes: dict[str, str] = field(default_factory=dict)  # host -> Ray node id
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def head(self) -> netns.Host:
        return next(iter(self.net.hosts.values()))

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{GCS_PORT}"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def ray_env(self) -> dict[str, str]:
        """Ray as on a Linux cluster, not held to loopback (a host has only its own loopback
        and the test subnet), with token authentication on and the token in our dir."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COOP_", "OPENAI_"))
        }
        env.update(
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.root / "auth_token"),
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
        )
        return env

    def coop_env(self) -> dict[str, str]:
        return {
            **self.ray_env(),
            "RAY_ADDRESS": self.address,
            "COOP_STATE_DIR": str(self.state),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}/v1",  # the host's own stand-in
            "OPENAI_API_KEY": "stand-in",
            "COLUMNS": "200",
        }

    def start(self, tasks: int) -> None:
        """A stand-in model on every host, then Ray (the head first); finds the node ids."""
        standin = f"-m scripts.standin --port {MODEL_PORT} --latency {LATENCY} --fanout 3"
        for host in self.net.hosts.values():
            self.net.spawn(
                host.name,
                [sys.executable, *standin.split(), "--limit", str(tasks)],
                env={**self.ray_env(), "PYTHONPATH": str(ROOT)},
                log=self.log(f"standin-{host.name}"),
                cwd=ROOT,
            )
        for host in self.net.hosts.values():
            flags = [
                *("--node-ip-address", host.ip, "--temp-dir", str(self.root / "ray" / host.name)),
                *("--num-cpus", "1", "--object-store-memory", str(128 * 1024**2)),
                "--disable-usage-stats",
            ]
            if host is self.head:
                flags += ["--head", "--port", str(GCS_PORT), "--include-dashboard", "false"]
            else:
                flags += ["--address", self.address]
            proc = self.net.run(
                host.name, [str(RAY), "start", *flags], env=self.ray_env(), timeout=120
            )
            self.log(f"ray-start-{host.name}").write_text(proc.stdout + proc.stderr)
            assert proc.returncode == 0, f"ray start on {host.name}:\n{proc.stderr[-3000:]}"
        found = self.net.run(
            self.head.name,
            [sys.executable, str(RAYLETS), "_nodes", self.address, str(len(self.net.hosts))],
            env=self.ray_env(),
            timeout=120,
        )
        assert found.returncode == 0, found.stderr[-2000:]
        by_ip = {n["ip"]: n["node_id"] for n in json.loads(found.stdout)}
        self.nodes = {h.name: by_ip[h.ip] for h in self.net.hosts.values()}
        logs = [self.log(f"standin-{host}") for host in self.net.hosts]

        def ready() -> bool:
            return all("model server at" in _read(log) for log in logs)

        wait_for(ready, 30, "the stand-in models", self.tails)

    def coop(self, host: str, name: str, *args: str) -> subprocess.Popen[bytes]:
        """The real `coop` command in `host`; its output in logs/<name>.log."""
        proc = self.net.spawn(
            host, [str(COOP), *args], env=self.coop_env(), log=self.log(name), cwd=self.root
        )
        self.procs[name] = proc
        return proc

    def plan(self, host: str, name: str, objective: str) -> subprocess.Popen[bytes]:
        """`coop start` in `host` (planning only), returned once its board journals."""
        proc = self.coop(host, name, "start", objective, *PLANNER_FLAGS)
        oid = objective_id(objective)
        wait_for(lambda: self.events(oid) or proc.poll() is not None, 60, "the board", self.tails)
        return proc

    def stop_all(self, grace: float = 10) -> None:
        """Wait for the `coop` processes a little (those that end with the objective); kill
        what is left, `nsenter` and the command it runs (the teardown would)."""
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            if _exit(proc, max(0.1, deadline - time.monotonic())) is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: see netns.spawn
                proc.wait(10)

    # -- reading -------------------------------------------------------------------------------

    def events(self, oid: str) -> Events:
        """The board's journal, read from its file."""
        path = self.state / "journal" / f"{oid}.db"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT seq, at, kind, data FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError as exc:  # made, its tables not yet
            if "no such table" in str(exc):
                return []
            raise
        finally:
            db.close()
        return [(seq, at, kind, json.loads(data)) for seq, at, kind, data in rows]

    def memory_rows(self, oid: str) -> list[tuple[int, int, str]]:
        """The built-in memory's file: (task id, lease token, worker) of each stored result."""
        db = sqlite3.connect(f"file:{self.state / 'memory' / f'{oid}.db'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT task_id, token, worker FROM results").fetchall()
        finally:
            db.close()

    def board(self, oid: str) -> dict[str, Any]:
        """The live board and memory, asked from the head once the run is over."""
        proc = self.net.run(
            self.head.name, [sys.executable, "-c", QUERY, oid], env=self.coop_env(), timeout=60
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return found

    def bill(self) -> Counter[str]:
        """Tokens the stand-ins served, all hosts together: what the run really spent."""
        total: Counter[str] = Counter()
        for host in self.net.hosts:
            proc = self.net.run(
                host, [sys.executable, "-c", BILL % MODEL_PORT], env=self.ray_env(), timeout=30
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            total.update(json.loads(proc.stdout))
        return total

    def tails(self, lines: int = 25) -> str:
        """The end of every log, for a failure's message."""
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(_read(log).splitlines()[-lines:])
            for log in sorted((self.root / "logs").glob("*.log"))
        )


@contextmanager
def lab(*hosts: str) -> Iterator[Lab]:
    """Hosts on a test bridge, with a private dir (short: Ray's socket paths are capped). On
    exit, however the block ends, every process started in them is killed and their namespaces
    and links are deleted; then none of them may be left."""
    root = Path(tempfile.mkdtemp(prefix="cpt-", dir="/tmp"))
    (root / "logs").mkdir()
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    try:
        with netns.network(*hosts) as net:
            yield Lab(net, root)
    finally:
        if os.environ.get("COOP_KEEP_PARTITION_LOGS"):
            print(f"partition test files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    left = netns.leftovers(os.getpid())
    assert not left, f"namespaces left behind: {left}"


# --- checks both tests make -------------------------------------------------------------------


def _assert_one_result_each(
    lb: Lab, oid: str, events: Events, board: dict[str, Any], why: object
) -> None:
    """Every task added was completed once: one `completed` event, one result on the board,
    one row in memory (from the completion the board accepted); none pending or dead."""
    added = [t[0] for _, _, k, d in events if k == "added" for t in d["tasks"]]
    done = [d["id"] for d in _completed(events)]
    assert sorted(done) == sorted(set(added)) == sorted(added), why
    results = [tid for tid, _, _ in board["results"]]
    assert sorted(results) == sorted(done) and board["completed"] == len(done), why
    assert board["pending"] == 0 and board["dead"] == 0 and board["unplanned"] == 0, why
    assert sorted(board["memory"]) == sorted(done), why
    accepted = {d["id"]: (d["token"], d["worker"]) for d in _completed(events)}
    stored = {tid: (token, worker) for tid, token, worker in lb.memory_rows(oid)}
    assert stored == accepted, why


def _assert_usage_adds_up(events: Events, board: dict[str, Any], why: object) -> None:
    """The board's usage per kind of call (calls, prompt and completion tokens) is the sum of
    its journal's `usage` events."""
    summed: dict[str, list[int]] = {kind: [0, 0, 0] for kind in board["usage"]}
    for _, _, k, d in events:
        if k == "usage":
            row = summed[d["kind"]]
            row[0], row[1], row[2] = row[0] + 1, row[1] + d["prompt"], row[2] + d["completion"]
    assert summed == board["usage"], why


def _assert_billed(events: Events, bill: Counter[str], why: object) -> None:
    """Every call the model servers answered was reported to the board once, none lost or
    counted twice, the partitioned worker's late ones too. (Charges the board makes by
    estimate, for a call in flight on a lease that expired, are not reports of calls.)"""
    reported = [0, 0]
    for _, _, k, d in events:
        if k == "usage" and not d.get("estimated"):
            reported = [reported[0] + d["prompt"], reported[1] + d["completion"]]
    assert reported == [bill["prompt_tokens"], bill["completion_tokens"]], why


# --- reading the journal ----------------------------------------------------------------------


def _completed(events: Events) -> list[dict[str, Any]]:
    return [d for _, _, k, d in events if k == "completed"]


def _completed_by(events: Events, worker: str) -> list[tuple[float, dict[str, Any]]]:
    return [(at, d) for _, at, k, d in events if k == "completed" and d["worker"] == worker]


def _claims(events: Events) -> list[str]:
    """Planner instances in the order they claimed the objective."""
    return [d["instance"] for _, _, k, d in events if k == "planner" and d["action"] == "claimed"]


def _held(events: Events, worker: str) -> dict[int, int]:
    """Task id -> token of the leases `worker` holds after these events."""
    held: dict[int, tuple[str, int]] = {}
    for _, _, kind, d in events:
        _apply(held, kind, d)
    return {tid: token for tid, (who, token) in held.items() if who == worker}


def _apply(held: dict[int, tuple[str, int]], kind: str, d: dict[str, Any]) -> None:
    """One event's effect on who holds which lease."""
    if kind == "leased":
        held[d["id"]] = (d["worker"], d["token"])
    elif kind in ("completed", "failed", "released"):
        held.pop(d["id"], None)
    elif kind == "expired":
        for tid in d["ids"]:
            held.pop(tid, None)


def _expired_while_cut(events: Events, worker: str, cut: float, healed: float) -> dict[int, int]:
    """Task id -> token of `worker`'s leases that expired between the cut and the heal."""
    held: dict[int, tuple[str, int]] = {}
    lost: dict[int, int] = {}
    for _, at, kind, d in events:
        if kind == "expired" and cut < at < healed:
            lost.update({t: held[t][1] for t in d["ids"] if t in held and held[t][0] == worker})
        _apply(held, kind, d)
    return lost


class _Explain:
    """A failed assertion's message (built only then): the journal's timeline around the cut,
    the stacks of processes still running, and the end of every log."""

    def __init__(
        self,
        lb: Lab,
        events: Events,
        cut: float,
        healed: float,
        stacks: dict[str, str],
    ) -> None:
        self.lb, self.events, self.cut, self.healed = lb, events, cut, healed
        self.stacks = stacks

    def __repr__(self) -> str:  # pytest shows an assertion's message with repr()
        return str(self)

    def __str__(self) -> str:
        lines = []
        for seq, at, kind, d in self.events:
            if kind == "usage":
                continue
            short = {k: v for k, v in d.items() if k not in ("text", "settings", "tasks")}
            if kind == "added":
                short["tasks"] = [t[0] for t in d["tasks"]]
            lines.append(f"{seq:5} {at - self.cut:+8.2f}s {kind:10} {json.dumps(short)[:150]}")
        lines.append(f"(cut at +0.00s, healed at {self.healed - self.cut:+.2f}s)")
        for name, stack in self.stacks.items():
            lines.append(f"--- {name} was still running; its threads:\n{stack}")
        return "\n".join(lines) + "\n" + self.lb.tails()


# --- processes --------------------------------------------------------------------------------


def _exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Its exit code once it ends, or None if it still runs after `timeout` seconds."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _still_running(**procs: subprocess.Popen[bytes]) -> dict[str, str]:
    """The Python stacks of those still running: what they wait for."""
    return {name: _stacks(proc) for name, proc in procs.items() if proc.poll() is None}


def _stacks(proc: subprocess.Popen[bytes]) -> str:
    """The Python threads of the command `proc` (an `nsenter`) runs, if py-spy is here."""
    if shutil.which("py-spy") is None or proc.poll() is not None:
        return "(py-spy is not installed)" if proc.poll() is None else "(it has ended)"
    try:
        child = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0]
        dump = subprocess.run(
            ["py-spy", "dump", "--pid", child], capture_output=True, text=True, timeout=30
        )
    except (OSError, IndexError, subprocess.SubprocessError) as exc:
        return f"(no stacks: {exc})"
    keep = [line for line in dump.stdout.splitlines() if "coop/" in line or "Thread" in line]
    return "\n".join(keep) or dump.stderr.strip()


def _worker_name(lb: Lab, log: str) -> str:
    """The worker a `coop join` started (it says so in its log)."""

    def said() -> re.Match[str] | None:
        return re.search(r"joined \S+ as (\S+)", _read(lb.log(log)))

    return str(wait_for(said, 60, f"the worker of {log}", lb.tails).group(1))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
