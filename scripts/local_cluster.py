"""A local multi-node Ray cluster on one machine: a head plus N worker raylets on 127.0.0.1,
each started by `ray start` as on a real cluster, token authentication on, stopped exactly
(see coop/testing/raylets.py for how).

    python -m scripts.local_cluster up --workers 2    # prints address, dashboard, nodes
    eval "$(python -m scripts.local_cluster env)"      # RAY_ADDRESS, token path, ...
    python -m scripts.local_cluster down              # stops this cluster, and only it
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from coop.testing.raylets import DEFAULT_ROOT, STATE_FILE, ClusterError, LocalCluster, down, up


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a head and N worker nodes")
    start.add_argument("--workers", type=int, default=1)
    start.add_argument("--cpus", type=int, default=2, help="CPUs per node")
    for command in (start, commands.add_parser("down"), commands.add_parser("env")):
        command.add_argument("--dir", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = up(args.workers, args.dir, args.cpus)
            print(f"address:   {cluster.address}")
            print(f"dashboard: {cluster.dashboard}")
            for node in cluster.nodes:
                print(f"node:      {node.node_id}  {node.name}  raylet port {node.raylet_port}")
            print(f"state:     {cluster.root / STATE_FILE}")
            print(f'client:    eval "$(python -m scripts.local_cluster env --dir {cluster.root})"')
        elif args.command == "down":
            pids = down(args.dir)
            print(f"stopped {len(pids)} process(es)" if pids else "no cluster running there")
        else:
            cluster = LocalCluster.load(args.dir)
            print("unset RAY_AUTH_TOKEN")
            for name, value in cluster.env().items():
                print(f"export {name}={shlex.quote(value)}")
    except (ClusterError, FileNotFoundError) as exc:
        print(f"local_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
