"""Event encoders from payload builders: a module's gRPC layer says how its event
becomes its payload message, and this turns that message into what the outbox keeps
(its full name and its deterministic bytes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from services.core.db.outbox import DomainEvent, EncodedPayload

E = TypeVar("E", bound=DomainEvent)


def proto_encoder(build: Callable[[E], Message]) -> Callable[[E], EncodedPayload]:
    def encode(event: E) -> EncodedPayload:
        message = build(event)
        return message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True)

    return encode
