"""Python tools that `coop join --tool tests.support.pytools:NAME` imports by path, on whatever
node its worker runs: each says which Ray node ran it."""

from __future__ import annotations

import ray

import coop


def _node() -> str:
    return str(ray.get_runtime_context().get_node_id())


@coop.tool(resources={"coop-node-1": 0.5}, timeout=30)
def where() -> str:
    """The Ray node this call ran on (placed on the node with the coop-node-1 resource)."""
    return _node()


@coop.tool
def here(ctx: coop.ToolContext) -> dict[str, str]:
    """The Ray node this call ran on (in its worker's process), and its idempotency key."""
    return {"node": _node(), "key": ctx.key}


@coop.tool(resources={"TPU": 4})
def needs_tpu() -> str:
    """A tool no node of a test cluster can run."""
    return "never"


@coop.tool(num_cpus=0.5, timeout=1)
def stuck() -> str:
    """A placed tool that never answers within its timeout."""
    import time

    time.sleep(60)
    return "late"
