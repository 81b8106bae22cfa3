"""Hypothesis strategies that build any request message of the protos from its
descriptor, filled with hostile values: empty, huge and mixed-script strings, control
and bidi characters, extreme and negative integers, unknown enum numbers, nonsense
field-mask paths and forged page tokens. Ids are drawn partly from `known` values so
that requests get past "not found" and into the deeper rules."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
INT32 = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1)
)
UINT32 = st.integers(0, 2**32 - 1)
TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            " ",
            "\t\n",
            "\x00",
            "a" * 10_000,
            "😀" * 300,
            "Ⅻ Ωmega Ünïcødé 中文 العربية",
            "\u202eevil\u202c",
            "'; DROP TABLE customers; --",
            "%_\\",
            "ann@example.com",
            "ANN@EXAMPLE.COM",
            "not an email",
            "EUR",
            "eur",
            "XXX",
            "correct horse battery",
            "x" * 73,
            "ü" * 40,  # 80 bytes: past bcrypt's 72
            "5f0c1d2e-8a4b-4c6d-9e7f-0a1b2c3d4e5f",
        ]
    ),
)


def page_tokens(valid: Sequence[str]) -> st.SearchStrategy[str]:
    """Junk, and valid tokens truncated, extended or with one character changed."""
    if not valid:
        return TEXT

    def mutated(token: str, position: int, replacement: str) -> str:
        position %= len(token)
        return token[:position] + replacement + token[position + 1 :]

    return st.one_of(
        TEXT,
        st.binary(max_size=64).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.sampled_from(valid).flatmap(lambda t: st.integers(0, len(t)).map(lambda n: t[:n])),
        st.sampled_from(valid).map(lambda t: t + "A"),
        st.builds(
            mutated, st.sampled_from(valid), st.integers(0, 10_000), st.sampled_from("A_-z0=")
        ),
    )


Known = Mapping[str, "Sequence[object] | st.SearchStrategy[object]"]


def _scalar(field: FieldDescriptor, known: Known) -> st.SearchStrategy:
    """Values for a field: for a field named in `known`, mostly the known values."""
    if field.name not in known:
        return _plain(field)
    values = known[field.name]
    chosen = values if isinstance(values, st.SearchStrategy) else st.sampled_from(values)
    return st.one_of(chosen, chosen, _plain(field))


_SIGNED_64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
}
_SIGNED_32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
}


def _plain(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return TEXT
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        # Open enums: any int32 goes over the wire, known or not.
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), INT32)
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return INT64
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return INT32
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return UINT32
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=100)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    raise NotImplementedError(field.full_name)


@st.composite
def messages(
    draw: st.DrawFn,
    descriptor: Descriptor,
    known: Known,
    depth: int = 0,
) -> Message:
    """A message of `descriptor` with a random subset of its fields set."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        is_repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            sub = _message_strategy(field.message_type, known, depth + 1)
            if is_repeated:
                for value in draw(st.lists(sub, max_size=4)):
                    getattr(message, field.name).add().CopyFrom(value)
            else:
                getattr(message, field.name).CopyFrom(draw(sub))
        elif is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field, known), max_size=5)))
        else:
            setattr(message, field.name, draw(_scalar(field, known)))
    return message


def _message_strategy(
    descriptor: Descriptor, known: Known, depth: int
) -> st.SearchStrategy[Message]:
    if descriptor.full_name == "google.protobuf.FieldMask":
        names = known.get("paths", ["*"])
        assert not isinstance(names, st.SearchStrategy)
        paths = st.lists(st.one_of(st.sampled_from(names), TEXT), max_size=4)
        return paths.map(lambda chosen: _field_mask(descriptor, chosen))
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(
            lambda seconds, nanos: _timestamp(descriptor, seconds, nanos), INT64, INT32
        )
    return messages(descriptor, known, depth)


def _field_mask(descriptor: Descriptor, paths: list[str]) -> Message:
    mask = message_factory.GetMessageClass(descriptor)()
    mask.paths.extend(paths)
    return mask


def _timestamp(descriptor: Descriptor, seconds: int, nanos: int) -> Message:
    stamp = message_factory.GetMessageClass(descriptor)()
    stamp.seconds, stamp.nanos = seconds, nanos
    return stamp
