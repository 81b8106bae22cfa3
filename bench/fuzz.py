"""A seeded fuzzer over every RPC of every service a server hosts.

Bodies are built from the request descriptors, then sent as raw bytes (identity
serializers), so they can be anything: random messages with extreme numbers (the
ends of every integer type, NaN, infinities, unknown enum values), hostile strings
(NUL, right-to-left overrides, 1 MB), 10,000-element lists, and then truncated,
corrupted, random bytes, or given a string that is not UTF-8 (a lone surrogate).
Some calls carry bogus caller tokens or metadata. Every call must answer before its
deadline, never INTERNAL nor UNKNOWN.

The e2e suite runs a small seeded round (tests/e2e/test_fuzz.py); a long run against
a `commerce serve` process on a throwaway PostgreSQL database, with the server's
memory after each round of 10,000:

    .venv/bin/python -m bench.fuzz --requests 50000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Every generated module registers its messages in the default pool.
import commerce.customers.v1.customer_service_pb2
import commerce.loyalty.v1.customer_loyalty_service_pb2
import commerce.orders.v1.customer_order_service_pb2
import commerce.orders.v1.order_service_pb2  # noqa: F401
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from bench.throwaway import commerce_server

SERVICES = (
    "commerce.customers.v1.CustomerService",
    "commerce.orders.v1.OrderService",
    "commerce.orders.v1.CustomerOrderService",
    "commerce.loyalty.v1.CustomerLoyaltyService",
)
FORBIDDEN = {"INTERNAL", "UNKNOWN"}
BIG_LIST = 10_000
CHUNK = 10_000
MEGABYTE = 1_000_000

T = FieldDescriptor
_INT_RANGES = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1),
    T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1),
    T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1),
    T.TYPE_FIXED32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1),
    T.TYPE_FIXED64: (0, 2**64 - 1),
}
STRINGS = [
    "",
    "a",
    "nul\x00byte",
    "\x00",
    "\u202eevil\u202c",
    "مرحبا بالعالم",
    "Ωμέγα-кириллица-中文-🙂",
    "%_\\' OR 1=1; --",
    "ann@example.com",
    "EUR",
    "en-US",
    "DE",
    " ",
    "\t\n\r",
    "x" * 256,
    "created_at",
    "first_name",
    "eyJvIjoxfQ",
]
# Values a rule may accept, by a part of the field's name.
_PLAUSIBLE_TEXT = [
    ("password", "correct horse battery"),
    ("currency", "EUR"),
    ("country", "DE"),
    ("language", "en"),
    ("phone", "+49 30 1234567"),
    ("postal", "10115"),
    ("paths", "first_name"),
    ("order_by", "created_at desc"),
]
# A string field whose bytes are no UTF-8: a lone surrogate, a stray continuation
# byte, an overlong encoding.
INVALID_UTF8 = [b"\xed\xa0\x80", b"\xbf", b"\xc0\xaf", b"abc\xff"]


@dataclass
class Fuzzer:
    rng: random.Random
    store_ids: Sequence[int]
    ids: Sequence[int] = (1, 2, 3)
    # Half of the messages are plausible (values a rule may accept), so that calls
    # get past validation into the queries; the other half are hostile.
    plausible: bool = False
    # One 1 MB string or one 10,000-element list per request, no more.
    big_left: bool = True

    def plausible_scalar(self, field: FieldDescriptor) -> object:
        name, kind = field.name, field.type
        if kind == T.TYPE_STRING:
            if "email" in name:
                return f"fuzz.{self.rng.getrandbits(40):x}@example.com"
            if name == "request_id":
                return f"{self.rng.getrandbits(128):032x}"
            for part, value in _PLAUSIBLE_TEXT:
                if part in name:
                    return value
            return self.rng.choice(["Ann", "Main St 1", "MUG-1", "signup bonus"])
        if kind == T.TYPE_ENUM and field.enum_type is not None:
            return self.rng.choice([value.number for value in field.enum_type.values])
        if kind in _INT_RANGES:
            if name == "store_id":
                return self.rng.choice(self.store_ids)
            return self.rng.choice([*self.ids, 10, 100, 1999])
        return self.hostile_scalar(field)

    def integer(self, kind: int, name: str) -> int:
        low, high = _INT_RANGES[kind]
        if name == "store_id" and self.rng.random() < 0.7:
            return self.rng.choice(self.store_ids)
        if name.endswith("_id") and self.rng.random() < 0.5:
            return min(max(self.rng.choice(self.ids), low), high)
        choices = [low, high, 0, 1, -1, 2**31, self.rng.randint(-1000, 1000)]
        return min(max(self.rng.choice(choices), low), high)

    def scalar(self, field: FieldDescriptor) -> object:
        return self.plausible_scalar(field) if self.plausible else self.hostile_scalar(field)

    def hostile_scalar(self, field: FieldDescriptor) -> object:
        kind = field.type
        if kind in _INT_RANGES:
            return self.integer(kind, field.name)
        if kind in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
            return self.rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 3.5])
        if kind == T.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind == T.TYPE_ENUM:
            enum = field.enum_type
            numbers = [value.number for value in enum.values] if enum else []
            return self.rng.choice([*numbers, 999, -1, 2**31 - 1])
        if kind == T.TYPE_STRING:
            if self.big_left and self.rng.random() < 0.01:
                self.big_left = False
                return "x" * MEGABYTE
            return self.rng.choice(STRINGS)
        if kind == T.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice([0, 1, 16, 300]))
        raise ValueError(f"no generator for field type {kind}")

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        message = message_factory.GetMessageClass(descriptor)()
        for each in descriptor.fields:
            nested = each.message_type
            if self.rng.random() < 0.35 or (nested is not None and depth >= 3):
                continue
            if nested is not None and nested.GetOptions().map_entry:
                continue  # no request has a map; the text rule's unit test covers them
            if each.is_repeated:
                count = self.rng.randint(1, 2) if self.plausible else self.rng.randint(0, 3)
                if self.big_left and self.rng.random() < 0.02:
                    # Small items only: ten thousand copies of a 1 MB one would be 10 GB.
                    count, self.big_left = BIG_LIST, False
                item = self.scalar(each) if nested is None else self.message(nested, depth + 1)
                getattr(message, each.name).extend([item] * count)
            elif nested is not None:
                getattr(message, each.name).CopyFrom(self.message(nested, depth + 1))
            else:
                with contextlib.suppress(ValueError, TypeError):
                    # a value this field cannot hold, such as NaN in an int
                    setattr(message, each.name, self.scalar(each))
        return message

    def body(self, descriptor: Descriptor) -> tuple[str, bytes]:
        """(the kind of body, its bytes)."""
        self.plausible = self.rng.random() < 0.5
        self.big_left = True
        valid = self.message(descriptor).SerializeToString()
        roll = self.rng.random()
        if roll < 0.55 or not valid:
            return "message", valid
        if roll < 0.7:
            return "truncated", valid[: self.rng.randrange(len(valid))]
        if roll < 0.82:
            corrupted = bytearray(valid)
            for _ in range(self.rng.randint(1, 4)):
                corrupted[self.rng.randrange(len(corrupted))] = self.rng.randrange(256)
            return "corrupted", bytes(corrupted)
        if roll < 0.9:
            return "random", self.rng.randbytes(self.rng.choice([1, 7, 64, 1000]))
        strings = [f for f in descriptor.fields if f.type == T.TYPE_STRING]
        if not strings:
            return "message", valid
        text = self.rng.choice(strings)
        payload = self.rng.choice(INVALID_UTF8)
        # A string field repeated at the end wins: protobuf must decode these bytes.
        return "invalid-utf8", valid + _tag(text.number, 2) + _varint(len(payload)) + payload

    def metadata(self) -> list[tuple[str, str]] | None:
        roll = self.rng.random()
        if roll < 0.85:
            return None
        if roll < 0.95:
            token = self.rng.choice(["", "cmt_" + "A" * 43, "x" * 4000, "\u00e9"])
            return [("authorization", f"Bearer {token}".encode("ascii", "replace").decode())]
        return [("authorization", "Basic Zm9vOmJhcg=="), ("x-request-id", "r" * 100)]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


@dataclass
class Result:
    codes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    forbidden: list[str] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.codes += other.codes
        self.by_kind += other.by_kind
        self.hangs += other.hangs
        self.forbidden += other.forbidden

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": sum(self.codes.values()),
            "codes": dict(self.codes.most_common()),
            "bodies": dict(self.by_kind.most_common()),
            "hangs": self.hangs,
            "forbidden": self.forbidden[:20],
        }


def methods(service_names: Sequence[str]) -> list[tuple[str, Descriptor]]:
    """(full method path, request descriptor) of every RPC of the services."""
    pool = descriptor_pool.Default()
    return [
        (f"/{service}/{rpc.name}", rpc.input_type)
        for service in service_names
        for rpc in pool.FindServiceByName(service).methods
    ]


async def fuzz(
    channel: grpc.aio.Channel,
    *,
    requests: int,
    seed: int,
    store_ids: Sequence[int],
    service_names: Sequence[str] = SERVICES,
    concurrency: int = 8,
    deadline: float = 30.0,
) -> Result:
    """Sends `requests` fuzzed calls, `concurrency` at a time."""
    fuzzer = Fuzzer(random.Random(seed), store_ids)  # noqa: S311 - reproducible on purpose
    targets = methods(service_names)
    # No serializers: bytes go out as they are, and come back as they are.
    calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
        path: channel.unary_unary(path) for path, _ in targets
    }
    result = Result()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            path, descriptor = fuzzer.rng.choice(targets)
            kind, body = fuzzer.body(descriptor)
            result.by_kind[kind] += 1
            call = calls[path](body, timeout=deadline, metadata=fuzzer.metadata())
            try:
                # A call the server never answers ends at the client's deadline;
                # the margin catches one that does not even do that.
                await asyncio.wait_for(call, deadline + 5)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            except TimeoutError:
                code = "HANG"
            if code in ("DEADLINE_EXCEEDED", "HANG"):
                result.hangs += 1
            if code in FORBIDDEN:
                result.forbidden.append(f"{path} {kind} {code} {body[:64]!r}")
            result.codes[code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    server = commerce_server(arguments.database_url, bcrypt_rounds=4)
    total, memory = Result(), []
    async with server as (target, pid), grpc.aio.insecure_channel(target) as channel:
        # A short warm-up, so that the first figure is the memory of a server in use.
        await fuzz(channel, requests=500, seed=-1, store_ids=[1, 2])
        memory.append(rss_kib(pid))
        began = time.perf_counter()
        # In rounds of CHUNK requests (seeds seed, seed + 1, ...), with the server's
        # memory after each: flat memory levels off instead of growing every round.
        for number, start in enumerate(range(0, arguments.requests, CHUNK)):
            result = await fuzz(
                channel,
                requests=min(CHUNK, arguments.requests - start),
                seed=arguments.seed + number,
                store_ids=[1, 2],
                concurrency=arguments.concurrency,
            )
            total.add(result)
            memory.append(rss_kib(pid))
        seconds = time.perf_counter() - began
    return {
        "seed": arguments.seed,
        **total.as_dict(),
        "seconds": round(seconds, 1),
        "server_rss_mib_per_round": [round(kib / 1024, 1) for kib in memory],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--concurrency", type=int, default=8)
    outcome = asyncio.run(run(parser.parse_args()))
    json.dump(outcome, sys.stdout, indent=2, ensure_ascii=False)
    print()
    sys.exit(1 if outcome["forbidden"] or outcome["hangs"] else 0)


if __name__ == "__main__":
    main()
