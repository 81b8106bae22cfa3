"""The orders service layer: placing orders, reading and listing them, and moving
them through their statuses. Plain values in, snapshots or domain errors out; each
call is one unit of work on its store, its statements in services.orders.queries and
its rules in services.orders.rules. No gRPC here, so it is testable without a
server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.core.db.counters import TakenNumber, next_store_number
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, remember
from services.core.db.unit_of_work import TenantDatabase, UnitOfWork
from services.core.domain.errors import NotFound
from services.core.domain.etags import check_etag, revision_named
from services.core.domain.pagination import PageTokenCodec
from services.customers.api import lock_active_customer
from services.orders import queries
from services.orders.events import OrderCreated, OrderStatusChanged
from services.orders.models import OrderSnapshot, OrderStatus
from services.orders.rules import (
    CREATE_ORDER,
    NO_FILTER,
    NewOrder,
    OrderFilter,
    OrderPage,
    StatusChange,
    check_order_id,
    cut_page,
    invalid_transition,
    normalized_filter,
    numbered_lines,
    order_number,
    order_total,
    page_request,
    validated_change,
    validated_order,
)

ORDER_COUNTER = "order"
# Operation names of the idempotency keys of the status changes, by the status each
# one gives; stored, so never rename one. Their keys remember the order's revision
# the change made (the order itself is named by the request, which is fingerprinted).
CHANGE_OPERATIONS = {
    OrderStatus.PAID: "orders.PayOrder",
    OrderStatus.SHIPPED: "orders.ShipOrder",
    OrderStatus.DELIVERED: "orders.DeliverOrder",
    OrderStatus.CANCELLED: "orders.CancelOrder",
}


class OrderService:
    def __init__(self, database: TenantDatabase, page_tokens: PageTokenCodec) -> None:
        self._db = database
        self._page_tokens = page_tokens

    async def create_order(
        self, store_id: int, new: NewOrder, *, request_id: str = ""
    ) -> OrderSnapshot:
        values = validated_order(new)
        key = RequestKey.parse(CREATE_ORDER, request_id, values)
        lines = numbered_lines(values["line_items"])
        # On PostgreSQL the number is taken before the order's transaction, in one of
        # its own: the store's counter row is locked for one statement, not until the
        # order commits, so the store's creates do not queue on each other. A create
        # that fails from here on leaves a gap (services.core.db.counters).
        number = TakenNumber(ORDER_COUNTER, unless=key)
        async with self._db.writing(store_id, before=number.take) as uow:
            if (earlier := await claim(uow, key)) is not None:
                return await queries.get_order(uow, earlier)
            customer = None
            if values["customer_id"]:
                customer = await lock_active_customer(uow, values["customer_id"], to="place orders")
            # SQLite (and a retry whose first try's key expired in between) take it
            # here, late: the counter row stays locked from here to the commit.
            order_id = number.value or await next_store_number(uow, ORDER_COUNTER)
            now = utc_now()
            order = {
                "order_id": order_id,
                "order_number": order_number(order_id),
                "customer_id": values["customer_id"] or None,
                "status": OrderStatus.PENDING.value,
                "currency_code": values["currency_code"],
                "total_minor": order_total(lines),
                "contact_email": values["contact_email"],
                "created_at": now,
                "updated_at": now,
                "revision": 1,
                "tracking_reference": "",
                "cancel_reason": "",
            }
            created = await queries.insert_order(uow, order, lines, customer)
            uow.record(OrderCreated(created))
            await remember(uow, key, order_id)
            # Last: the customer's statistics row stays locked from here to the
            # commit, so the customer's concurrent orders queue on it only this long.
            await queries.count_in_statistics(uow, created)
            await uow.commit()
        return created

    async def get_order(self, store_id: int, order_id: int) -> OrderSnapshot:
        async with self._db.reading(store_id) as uow:
            check_order_id(order_id)
            return await queries.get_order(uow, order_id)

    async def list_orders(
        self,
        store_id: int,
        *,
        page_size: int = 0,
        page_token: str = "",
        filters: OrderFilter = NO_FILTER,
    ) -> OrderPage:
        filters = normalized_filter(filters)
        scope = _page_scope(store_id, filters)
        request = page_request(self._page_tokens, scope, page_size, page_token)

        async def read(uow: UnitOfWork) -> list[OrderSnapshot]:
            return await queries.orders_page(uow, filters, request)

        # A list may lag a little: the read replica's when there is one.
        orders = await self._db.reading_stale_ok(store_id, read)
        return cut_page(self._page_tokens, request, orders)

    async def update_status(
        self, store_id: int, order_id: int, status: OrderStatus
    ) -> OrderSnapshot:
        """The deprecated UpdateOrderStatus: a change without etag or request_id."""
        async with self._db.writing(store_id) as uow:
            check_order_id(order_id)
            moved = await _move(uow, StatusChange(order_id, status))
            await queries.follow_status_change(uow, moved)
            await uow.commit()
        return moved.order

    async def change_status(
        self, store_id: int, change: StatusChange, *, request_id: str = ""
    ) -> OrderSnapshot:
        """PayOrder, ShipOrder, DeliverOrder and CancelOrder. A retry with the
        request_id of a change that landed answers with the order as that change left
        it, whatever happened to the order since; the key is written in the change's
        own transaction, so a change that failed or rolled back left none."""
        values = validated_change(change)
        key = RequestKey.parse(CHANGE_OPERATIONS[change.status], request_id, values)
        async with self._db.writing(store_id) as uow:
            # Before the etag and status checks: after the first try, both fail.
            if (revision := await claim(uow, key)) is not None:
                return await queries.order_at_revision(uow, change.order_id, revision)
            moved = await _move(uow, replace(change, **_stored(values)))
            await remember(uow, key, moved.order.revision)
            await queries.follow_status_change(uow, moved)  # last, as in create_order
            await uow.commit()
        return moved.order


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in ("tracking_reference", "cancel_reason")}


async def _move(uow: UnitOfWork, change: StatusChange) -> queries.Moved:
    """Makes the change and records its event, or raises why not: NOT_FOUND, ABORTED
    for a stale etag (checked first), FAILED_PRECONDITION when the order's status
    cannot become the new one. The caller follows it in the statistics."""
    moved = await queries.move_order(
        uow,
        change.order_id,
        change.status,
        revision=revision_named(change.etag),
        tracking_reference=change.tracking_reference,
        cancel_reason=change.cancel_reason,
    )
    if moved is not None:
        uow.record(OrderStatusChanged(moved.order, old_status=moved.old_status))
        return moved
    current = await queries.order_state(uow, change.order_id)
    if current is None:
        raise NotFound("order", str(change.order_id))
    status, revision = current
    check_etag("order", revision, change.etag)
    raise invalid_transition(status, change.status)


def _page_scope(store_id: int, filters: OrderFilter) -> dict[str, Any]:
    """What a page token of ListOrders is bound to. A single status is bound as the
    deprecated `status` was, and the newer filters only when set, so the tokens of
    requests that use none of them stay valid across versions."""
    scope: dict[str, Any] = {
        "list": "orders",
        "store_id": store_id,
        "status": str(filters.statuses[0]) if len(filters.statuses) == 1 else "None",
        "customer_id": str(filters.customer_id),
        "created_from": str(filters.created_from),
        "created_before": str(filters.created_before),
    }
    if len(filters.statuses) > 1:
        scope["statuses"] = [status.value for status in filters.statuses]
    if filters.guests_only:
        scope["guests_only"] = True
    return scope
