"""The orders service layer: placing orders, reading and listing them, and moving
them through their statuses. Plain values in, snapshots or domain errors out; each
call is one unit of work on its store, its statements in services.orders.queries and
its rules in services.orders.rules. No gRPC here, so it is testable without a
server."""

from __future__ import annotations

from dataclasses import asdict

from services.core.db.counters import next_store_number
from services.core.db.engine import utc_now
from services.core.db.idempotency import RequestKey, claim, remember
from services.core.db.unit_of_work import TenantDatabase
from services.core.domain.errors import NotFound
from services.core.domain.pagination import PageTokenCodec
from services.customers.api import lock_active_customer
from services.orders import queries
from services.orders.models import OrderSnapshot, OrderStatus
from services.orders.rules import (
    NO_FILTER,
    NewOrder,
    OrderFilter,
    OrderPage,
    check_filter,
    check_order_id,
    cut_page,
    invalid_transition,
    numbered_lines,
    order_number,
    order_total,
    page_request,
    validated_order,
)

ORDER_COUNTER = "order"
# Operation name of the idempotency keys of CreateOrder; stored, so never rename it.
CREATE_ORDER = "orders.CreateOrder"


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
        # Every create takes the store's counter row lock, so the CPU spent between
        # its statements is time other creates of the store wait.
        async with self._db.writing(store_id) as uow:
            if (earlier := await claim(uow, key)) is not None:
                return await queries.get_order(uow, earlier)
            customer = None
            if values["customer_id"]:
                customer = await lock_active_customer(uow, values["customer_id"], to="place orders")
            # Late, so the store's counter row stays locked only briefly; the time is
            # taken under that lock, so order numbers and create times agree.
            order_id = await next_store_number(uow, ORDER_COUNTER)
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
            }
            created = await queries.insert_order(uow, order, lines, customer)
            await remember(uow, key, order_id)
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
        check_filter(filters)
        scope = {"list": "orders", "store_id": store_id} | {
            name: str(value) for name, value in asdict(filters).items()
        }
        request = page_request(self._page_tokens, scope, page_size, page_token)
        async with self._db.reading(store_id) as uow:
            orders = await queries.orders_page(uow, filters, request)
        return cut_page(self._page_tokens, request, orders)

    async def update_status(
        self, store_id: int, order_id: int, status: OrderStatus
    ) -> OrderSnapshot:
        async with self._db.writing(store_id) as uow:
            check_order_id(order_id)
            moved = await queries.move_order(uow, order_id, status)
            if moved is None:
                current = await queries.order_status(uow, order_id)
                if current is None:
                    raise NotFound("order", str(order_id))
                raise invalid_transition(current, status)
            await uow.commit()
        return moved
