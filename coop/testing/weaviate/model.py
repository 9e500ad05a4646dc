"""What the stand-in stores, and what all its parts share: the constants of the Weaviate it
copies and `Fault`, a request Weaviate would refuse.

A collection (`Collection`) is its schema config, its tenants and a shard of objects (`Object`)
per tenant. It lives apart from the server so that the REST and gRPC handlers, and the
conversions and filters they use, can name these without importing the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

DEFAULT_VERSION = "1.32.0"  # >= 1.29: the client counts over gRPC Aggregate, not GraphQL
GRPC_MAX_MESSAGE = 104_858_000  # Weaviate's default, reported in /v1/meta


class Fault(Exception):
    """A request Weaviate would refuse: the gRPC status and message to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Object:
    uuid: str
    properties: dict[str, Any]
    vector: list[float] | None
    created: int  # ms since the epoch, as Weaviate reports creationTimeUnix
    updated: int


@dataclass
class Collection:
    config: dict[str, Any]  # as posted, with Weaviate's defaults filled in
    tenants: dict[str, str] = field(default_factory=dict)  # name -> activityStatus
    shards: dict[str, dict[str, Object]] = field(default_factory=dict)  # tenant ("") -> uuid
    dims: dict[str, int] = field(default_factory=dict)  # tenant -> vector length, once set

    @property
    def name(self) -> str:
        return str(self.config["class"])

    @property
    def multi_tenant(self) -> bool:
        return bool(self.config.get("multiTenancyConfig", {}).get("enabled"))

    def types(self) -> dict[str, str]:
        return {p["name"]: p["dataType"][0] for p in self.config.get("properties", [])}
