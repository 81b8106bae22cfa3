"""A consumer of the commerce events on NATS JetStream that depends on the stubs
only (the `commerce-protos` package) and on `nats-py`, never on the server's code.

    pip install ./generated nats-py
    python clients/python/event_consumer.py nats://127.0.0.1:4222 7    # --help

It reads one store's events from the stream through a durable pull consumer (which
remembers, across runs, what it acknowledged), decodes each body as the message its
`ce-type` header names, acknowledges it, and prints one JSON line per event:
CloudEvents attributes and the payload in canonical JSON. It stops once no event
came for `--idle` seconds, or after `--count` events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import nats
from commerce.customers.v1 import customer_events_pb2
from commerce.loyalty.v1 import loyalty_events_pb2
from commerce.orders.v1 import order_events_pb2
from google.protobuf import json_format, message
from nats.errors import TimeoutError as NatsTimeout

# Every event message, by its full name: the value of the ce-type header.
EVENT_TYPES: dict[str, type[message.Message]] = {
    descriptor.full_name: getattr(module, name)
    for module in (customer_events_pb2, order_events_pb2, loyalty_events_pb2)
    for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
}


def decoded(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """One event as a JSON-ready dict; an unknown type (a newer server) keeps its
    attributes and says so instead of failing."""
    event: dict[str, Any] = {
        attribute: headers.get(f"ce-{attribute}", "")
        for attribute in ("id", "type", "source", "subject", "sequence", "time")
    }
    kind = EVENT_TYPES.get(event["type"])
    if kind is None:
        event["payload"] = None
        event["note"] = "unknown event type: update commerce-protos"
    else:
        event["payload"] = json_format.MessageToDict(kind.FromString(body))
    return event


async def consume(arguments: argparse.Namespace) -> int:
    connection = await nats.connect(arguments.server, connect_timeout=5, max_reconnect_attempts=3)
    try:
        stream = connection.jetstream()
        subscription = await stream.pull_subscribe(
            f"{arguments.prefix}.{arguments.store_id}.>",
            durable=arguments.durable,
            stream=arguments.stream,
        )
        seen = 0
        while arguments.count == 0 or seen < arguments.count:
            try:
                batch = await subscription.fetch(100, timeout=arguments.idle)
            except NatsTimeout:
                break  # nothing came for --idle seconds
            for received in batch:
                print(json.dumps(decoded(dict(received.headers or {}), received.data)))
                await received.ack()
                seen += 1
        return 0
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", help="NATS URL, such as nats://127.0.0.1:4222")
    parser.add_argument("store_id", type=int, help="the store whose events to read")
    parser.add_argument("--stream", default="COMMERCE_EVENTS", help="the JetStream stream")
    parser.add_argument("--prefix", default="commerce.events", help="the subjects' prefix")
    parser.add_argument("--durable", default="event-consumer", help="the durable consumer")
    parser.add_argument("--idle", type=float, default=2.0, help="stop after this many idle seconds")
    parser.add_argument(
        "--count", type=int, default=0, help="stop after this many events (0: no limit)"
    )
    arguments = parser.parse_args()
    try:
        return asyncio.run(consume(arguments))
    except (OSError, nats.errors.NoServersError) as error:
        print(f"error: cannot reach NATS at {arguments.server}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
