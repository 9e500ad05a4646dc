"""`python -m tests.support.weaviate`: the command line of `cli`, as `scripts.weaviate_standin`."""

from tests.support.weaviate.cli import main

main()
