"""The Weaviate stand-in (coop/testing/weaviate), REST and gRPC on loopback:

python -m scripts.weaviate_standin --http-port 8080 --grpc-port 50051
"""

from coop.testing.weaviate import main

if __name__ == "__main__":
    main()
