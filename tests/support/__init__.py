"""The tests' own helpers, importable as `tests.support` from the repository's root (pytest
puts it on the path); the stand-ins they share with the scripts are `coop.testing`:

* `procs`: running the real `coop` command, and waiting for what it does;
* `board`, `memory`: an in-process board with a fake clock, an in-process memory;
* `netns`: hosts in network namespaces, for the partition tests;
* `phoenix`: a real Arize Phoenix on loopback, the trace tests' receiver;
* MCP servers, sandbox probes and Python tools the tests run.
"""
