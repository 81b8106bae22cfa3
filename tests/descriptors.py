"""The commerce protos as descriptors, for the tests that check the contract they state
(tests/unit/test_field_behavior.py, tests/unit/test_http_rules.py,
tests/e2e/test_contract_enforcement.py).

The files come from walking the generated package, never from a list, so a proto
added later is checked without anyone remembering to. `rebuilt` loads edited copies
into a pool of their own: how the unit tests prove their checkers see a broken
annotation."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import commerce
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
)

Behavior = field_behavior_pb2.FieldBehavior
REQUIRED = field_behavior_pb2.REQUIRED
OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY
IDENTIFIER = field_behavior_pb2.IDENTIFIER


def commerce_files() -> list[FileDescriptor]:
    """Every file descriptor of the generated `commerce` package, by file name."""
    files: dict[str, FileDescriptor] = {}
    for root in commerce.__path__:
        base = Path(root)
        if not base.is_dir():
            continue  # the editable install's import hook, not a directory
        for module_path in sorted(base.rglob("*_pb2.py")):
            parts = module_path.relative_to(base).with_suffix("").parts
            module = importlib.import_module(".".join(("commerce", *parts)))
            descriptor: FileDescriptor = module.DESCRIPTOR
            files[descriptor.name] = descriptor
    return [files[name] for name in sorted(files)]


def editable_copies(
    files: Iterable[FileDescriptor],
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """FileDescriptorProtos of `files`, by file name, to edit and then `rebuilt`."""
    return {
        file.name: descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
        for file in files
    }


def rebuilt(protos: Iterable[descriptor_pb2.FileDescriptorProto]) -> list[FileDescriptor]:
    """`protos` loaded into a fresh pool (their imports outside them taken from the
    default pool): descriptors as the generated code would have had them."""
    given = {proto.name: proto for proto in protos}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        proto = given.get(name) or descriptor_pb2.FileDescriptorProto.FromString(
            descriptor_pool.Default().FindFileByName(name).serialized_pb
        )
        for dependency in proto.dependency:
            add(dependency)
        pool.Add(proto)

    for name in sorted(given):
        add(name)
    return [pool.FindFileByName(name) for name in sorted(given)]


def messages(files: Iterable[FileDescriptor]) -> Iterator[Descriptor]:
    """Every message the files define, nested ones included (map entries are not
    written by anyone, so they are left out)."""

    def with_nested(message: Descriptor) -> Iterator[Descriptor]:
        if message.GetOptions().map_entry:
            return
        yield message
        for nested in message.nested_types:
            yield from with_nested(nested)

    for file in files:
        for message in file.message_types_by_name.values():
            yield from with_nested(message)


def methods(files: Iterable[FileDescriptor]) -> Iterator[MethodDescriptor]:
    """Every RPC of every service the files define."""
    for file in files:
        for service in file.services_by_name.values():
            yield from service.methods


def method_path(method: MethodDescriptor) -> str:
    """The gRPC path without its leading slash: 'commerce.orders.v1.OrderService/GetOrder'."""
    return f"{method.containing_service.full_name}/{method.name}"


def behaviors(field: FieldDescriptor) -> set[int]:
    """The field's google.api.field_behavior values."""
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def behavior_names(field: FieldDescriptor) -> list[str]:
    return sorted(field_behavior_pb2.FieldBehavior.Name(value) for value in behaviors(field))


def is_required(field: FieldDescriptor) -> bool:
    return REQUIRED in behaviors(field)


def http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's google.api.http option, or None without one."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def request_messages(files: Sequence[FileDescriptor]) -> dict[str, Descriptor]:
    """The input message of every RPC, by full name."""
    return {method.input_type.full_name: method.input_type for method in methods(files)}


def response_messages(files: Sequence[FileDescriptor]) -> dict[str, Descriptor]:
    """The output message of every RPC, by full name."""
    return {method.output_type.full_name: method.output_type for method in methods(files)}


def message_proto(
    copies: dict[str, descriptor_pb2.FileDescriptorProto], full_name: str
) -> descriptor_pb2.DescriptorProto:
    """The (top-level) message `full_name` among `editable_copies`, to edit."""
    package, _, name = full_name.rpartition(".")
    for proto in copies.values():
        if proto.package != package:
            continue
        for message in proto.message_type:
            if message.name == name:
                return message
    raise KeyError(full_name)


def field_proto(
    copies: dict[str, descriptor_pb2.FileDescriptorProto], full_name: str
) -> descriptor_pb2.FieldDescriptorProto:
    """The field `package.Message.field` among `editable_copies`, to edit."""
    message_name, _, field_name = full_name.rpartition(".")
    for field in message_proto(copies, message_name).field:
        if field.name == field_name:
            return field
    raise KeyError(full_name)


def method_proto(
    copies: dict[str, descriptor_pb2.FileDescriptorProto], path: str
) -> descriptor_pb2.MethodDescriptorProto:
    """The method 'package.Service/Method' among `editable_copies`, to edit."""
    service_name, _, method_name = path.partition("/")
    package, _, service_short = service_name.rpartition(".")
    for proto in copies.values():
        if proto.package != package:
            continue
        for service in proto.service:
            if service.name != service_short:
                continue
            for method in service.method:
                if method.name == method_name:
                    return method
    raise KeyError(path)
