"""Etags (AIP-154) of the resources that count their changes in a revision number:
`r{revision}`, opaque to callers, and the check that refuses a change decided on a
version the resource no longer has."""

from __future__ import annotations

from services.core.domain.errors import Aborted

# Longer digit strings were never issued: no revision reaches a billion changes.
_MAX_DIGITS = 9


def etag(revision: int) -> str:
    """The etag callers see for `revision`."""
    return f"r{revision}"


def revision_named(sent: str) -> int | None:
    """The revision an etag names: None without an etag, 0 (which no resource has) for
    one this server never issued, so that it is refused like any stale etag."""
    if not sent:
        return None
    digits = sent[1:]
    issued = digits.isascii() and digits.isdigit() and len(digits) <= _MAX_DIGITS
    if not issued or sent != etag(int(digits)):
        return 0
    return int(digits)


def check_etag(kind: str, revision: int, sent: str) -> None:
    """ABORTED when the caller sent an etag and the `kind` (customer, order, ...) has
    moved on from it."""
    current = etag(revision)
    if sent and sent != current:
        raise Aborted(
            f"the {kind} changed since this etag was read; read it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": current},
        )
