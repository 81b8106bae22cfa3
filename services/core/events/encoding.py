"""Event encoders from payload builders: a module's gRPC layer says how its event
becomes its payload message, and this turns that message into what the outbox keeps
(its full name and its deterministic bytes); and redactors, which say which fields
of a recorded payload EraseCustomer empties."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from services.core.db.outbox import DomainEvent, EncodedPayload, Redactor

E = TypeVar("E", bound=DomainEvent)


def proto_encoder(build: Callable[[E], Message]) -> Callable[[E], EncodedPayload]:
    def encode(event: E) -> EncodedPayload:
        message = build(event)
        return message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True)

    return encode


def proto_redactor(message_class: type[Message], *paths: str) -> Redactor:
    """A redactor (services.core.db.outbox) of payloads of `message_class` that
    clears the fields of `paths` ("customer.email": the email of the message's
    `customer`), leaving every other field as recorded."""
    split = [path.split(".") for path in paths]

    def redact(payload: bytes) -> bytes:
        message = message_class.FromString(payload)
        for *parents, name in split:
            holder = message
            for parent in parents:
                if not holder.HasField(parent):
                    break  # an unset message has nothing to clear
                holder = getattr(holder, parent)
            else:
                holder.ClearField(name)
        return message.SerializeToString(deterministic=True)

    return redact
