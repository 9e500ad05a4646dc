#!/usr/bin/env python
"""A placed tool: `@coop.tool(resources={...})` runs each call as a Ray task wherever the
cluster has those resources, so a worker without them still offers the tool. Here a custom
resource stands in for a GPU: on a local cluster of real raylets (a head and one worker node,
scripts/local_cluster.py), only the worker node has `coop-node-1`; the planner and the only
worker run on the head, and every call of `embed_on_gpu` runs on the worker node.

    python -m scripts.example_placed_tool     # offline simulated model; ~40 s

Exits 1 unless every call ran on the node with the resource.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ray

import coop
from coop.testing import raylets
from coop.text import objective_id

COOP = Path(sys.executable).with_name("coop")


@coop.tool(resources={"coop-node-1": 0.5}, timeout=60)
def embed_on_gpu(text: str) -> dict[str, object]:
    """A vector for the text, computed on the accelerator node (and the node it ran on)."""
    vector = [round((sum(map(ord, text)) * (i + 1)) % 97 / 97, 3) for i in range(4)]
    return {"node": ray.get_runtime_context().get_node_id(), "vector": vector}


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="coop-ex-"))
    state = Path(tempfile.mkdtemp(prefix="coop-ex-state-"))
    objective = f"Index the garden notes by meaning [{uuid.uuid4().hex[:6]}]"
    oid = objective_id(objective)
    try:
        with raylets.running(workers=1, root=root) as cluster:
            env = cluster.client_env({**os.environ, "COOP_STATE_DIR": str(state)})
            head, gpu_node = cluster.head.node_id, cluster.workers[0].node_id
            log = root / "start.log"
            with log.open("w") as out:
                start = subprocess.Popen(
                    [str(COOP), "start", objective, "--llm", "offline", "--workers", "0"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            while oid not in log.read_text() and start.poll() is None:
                time.sleep(0.2)
            tool = "scripts.example_placed_tool:embed_on_gpu"
            join = [str(COOP), "-q", "join", oid, "--node", head, "--tool", tool]
            subprocess.run(join, env=env, check=True)
            start.wait(120)
            tape = subprocess.run(
                [str(COOP), "events", oid, "--json"], env=env, capture_output=True, text=True
            ).stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    events = [json.loads(line) for line in tape.splitlines()]
    calls = [e for e in events if e["event"] == "step" and e.get("tool") == "embed_on_gpu"]
    nodes = [json.loads(c["text"])["node"] if c["ok"] else c["text"] for c in calls]
    print(f"worker on the head {head[:8]}; {len(calls)} call(s) of embed_on_gpu ran on:")
    for c, node in zip(calls, nodes, strict=True):
        print(f"  task #{c['task']}: node {node[:8]}")
    return 0 if calls and all(n == gpu_node for n in nodes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
