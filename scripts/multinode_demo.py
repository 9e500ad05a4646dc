#!/usr/bin/env python
"""Multi-node on one machine: `coop start` plans on the head of a local multi-node Ray
cluster, one `coop join` is pinned to each worker node, and the demo shows which node
executed which tasks.

    python -m scripts.multinode_demo            # a head and 2 worker nodes, ~30 s
    python -m scripts.multinode_demo --workers 3 --tasks 18

The nodes are real raylets started with `ray start` on 127.0.0.1 (coop/testing/raylets.py),
with token authentication on; the model is the stand-in server (coop/testing/standin.py) with a
little latency, so that the work spreads. Exits 1 unless every worker node executed tasks
and every task was executed exactly once.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from coop.simulate import Simulator
from coop.testing import raylets as local_cluster
from coop.testing.cluster import COOP
from coop.testing.standin import StandIn
from coop.text import objective_id

OBJECTIVE = "Compare three ways to compost in a small garden"
PLACED = re.compile(r"^(\S+) on node ([0-9a-f]+): \d+ completed", re.MULTILINE)
"""`coop join`'s last line: its worker, and the node that worker itself reported running on."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--tasks", type=int, default=12, help="tasks the model proposes")
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per model reply")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="coop-demo-"))  # short: Ray's socket paths are capped
    server = StandIn(latency=args.latency, simulator=Simulator(fanout=3, limit=args.tasks))
    server.start()
    try:
        with local_cluster.running(workers=args.workers, root=root / "c") as cluster:
            return demo(cluster, server, root)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def demo(cluster: local_cluster.LocalCluster, server: StandIn, root: Path) -> int:
    env = cluster.client_env()
    env.update(
        COOP_STATE_DIR=str(root / "state"),
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="stand-in",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    print(f"cluster {cluster.address}, dashboard {cluster.dashboard}")
    for node in cluster.nodes:
        print(f"  {node.name:12} {node.node_id}")
    oid = objective_id(OBJECTIVE)
    logs = root / "logs"
    logs.mkdir()

    def spawn(name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as out:  # the child keeps its own copy
            return subprocess.Popen(
                [str(COOP), *argv], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    start = spawn("start", "start", OBJECTIVE, "--workers", "0")
    journal = root / "state" / "journal" / f"{oid}.db"
    deadline = time.monotonic() + 60
    while not journal.exists():  # the board writes its journal as it starts
        if start.poll() is not None or time.monotonic() > deadline:
            print((logs / "start.log").read_text(), file=sys.stderr)
            return 1
        time.sleep(0.2)
    joins = {
        node.name: spawn(node.name, "join", oid, "--node", node.node_id)  # a task at a time
        for node in cluster.workers
    }
    code = start.wait(600)
    for proc in joins.values():
        proc.wait(120)
    print(f"coop start exited {code}; planner on {cluster.head.name}, workers on the others")

    worker_node: dict[str, str] = {}  # worker name -> node name
    for node in cluster.workers:
        for worker, prefix in PLACED.findall((logs / f"{node.name}.log").read_text()):
            if node.node_id.startswith(prefix):
                worker_node[worker] = node.name
    results = subprocess.run(
        [str(COOP), "results", oid, "--format", "jsonl"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in results]
    done = [r for r in rows if "task_id" in r]
    per_node = Counter(worker_node.get(r["worker"], f"? {r['worker']}") for r in done)
    print(f"\n{'node':12} {'tasks executed':>14}")
    for node in cluster.workers:
        print(f"{node.name:12} {per_node.get(node.name, 0):>14}")
    unique_ids = len({r["task_id"] for r in done})
    print(f"{'total':12} {len(done):>14}  ({unique_ids} distinct tasks)")
    ok = (
        code == 0
        and all(per_node.get(n.name, 0) > 0 for n in cluster.workers)
        and unique_ids == len(done) > 0
        and set(per_node) <= {n.name for n in cluster.workers}
    )
    print("multi-node demo: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
