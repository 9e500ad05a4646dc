"""Stand-ins for what a run needs from outside, for tests of coop and of the drivers people
write with it, for the benchmarks and for the demos. Nothing in a run imports them.

* `standin`: an OpenAI-compatible model server on loopback, with injectable faults (429s,
  5xx, malformed replies, latency); `python -m scripts.standin` runs it on its own;
* `weaviate`: a Weaviate stand-in speaking REST and gRPC to the real client;
* `cluster`: a private Ray cluster on loopback, and `coop` processes pointed at it;
* `raylets`: a multi-node cluster of real `ray start` raylets on one machine
  (`python -m scripts.local_cluster`).

They ship with the package, as Ray's own `ray.cluster_utils` does, so that the scripts need
nothing from the tests.
"""
