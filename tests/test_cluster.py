"""Connecting to Ray: loopback detection, fast failures, and the cluster-launcher config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from coop import cluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1:6379", True),
        ("localhost:6379", True),
        ("ray://127.0.0.2:10001", True),
        ("10.0.0.5:6379", False),
        ("no-such-host.invalid:6379", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert cluster._is_loopback(address) is loopback


def test_unreachable_address_fails_in_seconds() -> None:
    began = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"cannot reach Ray at 127\.0\.0\.1:1"):
        cluster._check_reachable("127.0.0.1:1")
    assert time.monotonic() - began < cluster.CONNECT_TIMEOUT + 1


def test_cluster_yaml_passes_rays_validator() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    commands = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands
    settings = "\n".join(
        line.split("#", 1)[0] for line in (ROOT / "cluster.yaml").read_text().splitlines()
    )
    assert "OPENAI_API_KEY" not in settings and "sk-" not in settings
