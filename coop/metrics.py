"""The board's numbers as Prometheus metrics, through Ray's own pipeline (`ray.util.metrics`):
every node's metrics endpoint serves them, and Ray's generated Prometheus/Grafana config
picks them up with the rest. All are tagged by objective; none carries a secret.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import ray
from ray.util.metrics import Counter, Gauge, Histogram

REFRESH = 1.0
"""Seconds between two updates of the gauges (the counters move with every model call)."""
LATENCY_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]


class BoardMetrics:
    """Live only inside a Ray actor: the same Board class read in-process (a report of a
    dormant objective, a unit test) exports nothing."""

    def __init__(self, objective_id: str) -> None:
        self.on = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
        self.tags = {"objective": objective_id}
        self._last = 0.0
        if not self.on:
            return
        obj = ("objective",)
        self.tasks = Gauge("coop_tasks", "Tasks by state.", tag_keys=(*obj, "state"))
        self.queue = Gauge(
            "coop_queue_depth", "Pending tasks a worker could lease now.", tag_keys=obj
        )
        self.leases = Gauge("coop_leases_in_flight", "Tasks leased to workers.", tag_keys=obj)
        self.budget = Gauge(
            "coop_budget_left", "What is left of each cap set.", tag_keys=(*obj, "budget")
        )
        self.stalls = Gauge("coop_stall_counter", "The planner's stall counter.", tag_keys=obj)
        self.calls = Counter("coop_model_calls", "Model calls.", tag_keys=(*obj, "kind"))
        self.tokens = Counter("coop_tokens", "Tokens used.", tag_keys=(*obj, "kind"))
        self.cost = Counter("coop_cost_usd", "Cost in USD.", tag_keys=(*obj, "kind"))
        self.latency = Histogram(
            "coop_model_latency_seconds",
            "Model call latency.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=(*obj, "kind"),
        )

    def call(self, kind: str, tokens: int, cost: float, latency: float) -> None:
        if not self.on:
            return
        tags = {**self.tags, "kind": kind}
        self.calls.inc(1, tags=tags)
        if tokens:
            self.tokens.inc(tokens, tags=tags)
        if cost:
            self.cost.inc(cost, tags=tags)
        if latency:
            self.latency.observe(latency, tags=tags)

    def due(self, force: bool = False) -> bool:
        """Whether the gauges should be refreshed now."""
        if not self.on or not (force or time.monotonic() - self._last >= REFRESH):
            return False
        self._last = time.monotonic()
        return True

    def state(
        self,
        tasks: Mapping[str, int],
        queue: int,
        leases: int,
        budget_left: Mapping[str, float],
        stalls: int,
    ) -> None:
        for state, count in tasks.items():
            self.tasks.set(count, tags={**self.tags, "state": state})
        self.queue.set(queue, tags=self.tags)
        self.leases.set(leases, tags=self.tags)
        for budget, left in budget_left.items():
            self.budget.set(left, tags={**self.tags, "budget": budget})
        self.stalls.set(stalls, tags=self.tags)
