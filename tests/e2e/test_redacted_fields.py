"""Fields the protos mark debug_redact (passwords) never reach the server's log: each
one the descriptors list, sent through a real `commerce serve` logging JSON at DEBUG,
in a request the server serves, in one it refuses for a NUL character, and in a
body it cannot decode.

Python's protobuf prints debug_redact fields in clear (str() and text_format of
protobuf 7 do not redact them), so what keeps them out of the log is that the
server never logs a request message; this test holds it to that for every such
field, present and future."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from tests.descriptors import commerce_files, method_path, methods
from tests.process import migrated_sqlite_env, running_server

EMAIL = "redacted.person@example.com"


def redacted_fields(message: Descriptor, prefix: str = "") -> Iterator[str]:
    """Paths of the debug_redact fields of `message` and of the messages it holds."""
    for field in message.fields:
        if field.GetOptions().debug_redact:
            yield prefix + field.name
        elif field.message_type is not None and not field.is_repeated:
            yield from redacted_fields(field.message_type, f"{prefix}{field.name}.")


def methods_with_secrets() -> dict[str, tuple[MethodDescriptor, list[str]]]:
    found = {}
    for method in methods(commerce_files()):
        paths = list(redacted_fields(method.input_type))
        if paths:
            found[method_path(method)] = (method, paths)
    return found


def request_carrying(method: MethodDescriptor, secrets: dict[str, str]) -> Message:
    """A request of store 1 for customer 1 with `secrets` in its redacted fields and
    EMAIL wherever an email goes: plausible enough to reach the password checks."""
    request = message_factory.GetMessageClass(method.input_type)()
    for name, value in (("store_id", 1), ("customer_id", 1), ("email", EMAIL)):
        if name in method.input_type.fields_by_name:
            setattr(request, name, value)
    for path, secret in secrets.items():
        holder = request
        *parents, name = path.split(".")
        for parent in parents:
            holder = getattr(holder, parent)
        field: FieldDescriptor = holder.DESCRIPTOR.fields_by_name[name]
        setattr(holder, name, secret.encode() if field.type == field.TYPE_BYTES else secret)
    return request


def raw_call(channel: grpc.Channel, path: str, body: bytes) -> grpc.StatusCode:
    """The status of a call that sends `body` as it is."""
    call = channel.unary_unary(f"/{path}", request_serializer=None, response_deserializer=None)
    try:
        call(body, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        return code
    return grpc.StatusCode.OK


def test_the_protos_mark_the_passwords_redacted():
    """What the log check below covers; an empty list would make it vacuous."""
    assert {
        (path.rsplit("/", 1)[1], tuple(fields))
        for path, (_, fields) in methods_with_secrets().items()
    } >= {
        ("CreateCustomer", ("password",)),
        ("AuthenticateCustomer", ("password",)),
        ("ChangeCustomerPassword", ("current_password", "new_password")),
    }


def test_no_redacted_field_reaches_the_log(tmp_path: Path) -> None:
    env = migrated_sqlite_env(tmp_path, "Secrets")
    secrets: list[str] = []
    calls = 0
    with (
        running_server(tmp_path, env, "--log-level", "debug", "--log-format", "json") as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        # Twice over: the first CreateCustomer makes the customer the later logins
        # and password changes find.
        for _ in range(2):
            for path, (method, fields) in sorted(methods_with_secrets().items()):
                values = {field: f"secret-{uuid.uuid4().hex}" for field in fields}
                secrets += values.values()
                body = request_carrying(method, values).SerializeToString()
                with_nul = request_carrying(
                    method, {field: value + "\x00" for field, value in values.items()}
                ).SerializeToString()
                for sent in (body, with_nul, body[:-1]):
                    assert raw_call(channel, path, sent) != grpc.StatusCode.UNKNOWN
                    calls += 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    log = server.output()
    records = [json.loads(line) for line in log.splitlines()]
    assert [secret for secret in secrets if secret in log] == []
    # Every call was logged (at DEBUG, so nothing was filtered out).
    assert sum("grpc_code" in record for record in records) == calls
