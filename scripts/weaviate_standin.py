"""The Weaviate stand-in (tests/support/weaviate), REST and gRPC on loopback:

python -m scripts.weaviate_standin --http-port 8080 --grpc-port 50051
"""

from tests.support.weaviate import main

if __name__ == "__main__":
    main()
