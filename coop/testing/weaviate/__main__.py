"""`python -m coop.testing.weaviate`: the command line of `cli`, as `scripts.weaviate_standin`."""

from coop.testing.weaviate.cli import main

main()
