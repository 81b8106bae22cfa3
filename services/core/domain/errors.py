"""The domain's error hierarchy. Service layers raise these; one interceptor maps them
to gRPC status codes (services.core.rpc.statuses), so no service knows about gRPC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from services.core.domain.resource_names import STORES, name_in_scope, resource_name


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending request field, named by its path in the request message."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a caller is meant to see. `reason` is a stable UPPER_SNAKE
    identifier for programs; `message` is for people."""

    default_reason = "ERROR"
    # The canonical name of the resource the error is about (AIP-122), when it names
    # one: google.rpc.ResourceInfo and the RPC's log line show it.
    resource_name = ""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {key: str(value) for key, value in (metadata or {}).items()}


class InvalidArgument(DomainError):
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        fields = ", ".join(violation.field for violation in violations)
        super().__init__(message or f"invalid request: check {fields}")
        self.violations = violations

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    """No such resource. Its ResourceInfo names it canonically: `collection` (by
    default the regular plural of `resource_type`) and `resource_id`, under `parent`'s
    collection ids and ids, in the store whose unit of work is open (a store itself
    is a top-level resource)."""

    default_reason = "NOT_FOUND"

    def __init__(
        self,
        resource_type: str,
        resource_id: str | int,
        *,
        collection: str = "",
        parent: Sequence[str | int] = (),
        reason: str | None = None,
    ):
        super().__init__(
            f"{resource_type} {resource_id} not found",
            reason=reason or f"{resource_type.upper()}_NOT_FOUND",
        )
        collection = collection or f"{resource_type}s"
        self.resource_type = resource_type
        self.resource_id = str(resource_id)
        self.resource_name = (
            resource_name(STORES, resource_id)
            if collection == STORES and not parent
            else name_in_scope(*parent, collection, resource_id)
        )


class AlreadyExists(DomainError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(DomainError):
    """The request reaches past what is kept or valid, such as a feed cursor whose
    following events were deleted."""

    default_reason = "OUT_OF_RANGE"


class Unauthenticated(DomainError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """Refused for now; the same request may succeed after `retry_after`."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: timedelta,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class Violations:
    """Collects every problem of a request, so the caller learns them all at once."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(self._prefix + field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


class Aborted(DomainError):
    """A concurrent change won; the caller may read again and retry."""

    default_reason = "ABORTED"


class Overloaded(ResourceExhausted):
    """The work queued ahead of this call cannot be done within its deadline: refused
    at once, so the caller can retry after `retry_after` instead of timing out."""

    default_reason = "SERVER_BUSY"

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        metadata = {"retry_after_ms": int(retry_after / _MS)}
        super().__init__(message, retry_after=retry_after, metadata=metadata)


_MS = timedelta(milliseconds=1)
