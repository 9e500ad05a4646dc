"""What the tests and the scripts share, importable as `tests.support` from the repository's
root (pytest puts it on the path; scripts run as `python -m scripts.<name>`):

* `standin`: an OpenAI-compatible model server on loopback, with injectable faults;
* `weaviate`: a Weaviate stand-in speaking REST and gRPC to the real client;
* `cluster`: a private Ray cluster on loopback, and `coop` processes pointed at it;
* `raylets`: a multi-node cluster of real `ray start` raylets on one machine;
* `procs`: running the real `coop` command, and waiting for what it does.
"""
