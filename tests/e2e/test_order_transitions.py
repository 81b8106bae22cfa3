"""PayOrder, ShipOrder, DeliverOrder and CancelOrder through a real server: etags
(AIP-154), request_ids (AIP-155), the status machine and their limits."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from commerce.orders.v1 import order_pb2
from commerce.orders.v1 import order_service_pb2 as pb
from sqlalchemy import func, select

from services.orders.models import OrderRevision
from tests.e2e.helpers import create_order
from tests.errors import rpc_error

Code = grpc.StatusCode
S = order_pb2.OrderStatus

# Each transition: its method's name, its request type, the fields it needs beside
# the order, and the status it gives.
PAY = ("PayOrder", pb.PayOrderRequest, {}, S.ORDER_STATUS_PAID)
SHIP = ("ShipOrder", pb.ShipOrderRequest, {"tracking_reference": "1Z999"}, S.ORDER_STATUS_SHIPPED)
DELIVER = ("DeliverOrder", pb.DeliverOrderRequest, {}, S.ORDER_STATUS_DELIVERED)
CANCEL = (
    "CancelOrder",
    pb.CancelOrderRequest,
    {"reason": "out of stock"},
    S.ORDER_STATUS_CANCELLED,
)
TRANSITIONS = {"pay": PAY, "ship": SHIP, "deliver": DELIVER, "cancel": CANCEL}
# The transitions that bring a new order to the status each transition starts from.
BEFORE = {"pay": [], "ship": [PAY], "deliver": [PAY, SHIP], "cancel": [PAY]}


def call(orders, transition, store_id: int, order: order_pb2.Order, **fields: Any) -> Any:
    method, request_type, needed, _ = transition
    request = request_type(store_id=store_id, order_id=order.order_id, **(needed | fields))
    return getattr(orders, method)(request)


async def move(orders, transition, store_id: int, order: order_pb2.Order, **fields: Any):
    return (await call(orders, transition, store_id, order, **fields)).order


async def order_ready_for(orders, store_id: int, name: str) -> order_pb2.Order:
    order = await create_order(orders, store_id)
    for earlier in BEFORE[name]:
        order = await move(orders, earlier, store_id, order)
    return order


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_a_transition_with_the_current_etag_changes_the_order(orders, store_id, name):
    transition = TRANSITIONS[name]
    order = await order_ready_for(orders, store_id, name)
    moved = await move(orders, transition, store_id, order, etag=order.etag)
    assert moved.status == transition[3]
    assert moved.etag
    assert moved.etag != order.etag
    assert moved.name == f"stores/{store_id}/orders/{order.order_id}"
    assert moved.update_time.ToDatetime() >= order.update_time.ToDatetime()
    got = (
        await orders.GetOrder(pb.GetOrderRequest(store_id=store_id, order_id=order.order_id))
    ).order
    assert got == moved


async def test_ship_keeps_its_tracking_reference_and_cancel_its_reason(orders, store_id):
    order = await order_ready_for(orders, store_id, "ship")
    shipped = await move(orders, SHIP, store_id, order, tracking_reference="  1Z-42  ")
    assert (shipped.tracking_reference, shipped.cancel_reason) == ("1Z-42", "")
    delivered = await move(orders, DELIVER, store_id, shipped)
    assert delivered.tracking_reference == "1Z-42"
    # A tracking reference is optional.
    untracked = await move(
        orders,
        SHIP,
        store_id,
        await order_ready_for(orders, store_id, "ship"),
        tracking_reference="",
    )
    assert untracked.tracking_reference == ""
    cancelled = await move(orders, CANCEL, store_id, await create_order(orders, store_id))
    assert (cancelled.cancel_reason, cancelled.tracking_reference) == ("out of stock", "")


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_a_stale_etag_is_aborted_and_changes_nothing(orders, store_id, name):
    transition = TRANSITIONS[name]
    order = await create_order(orders, store_id)
    ready = await order_ready_for(orders, store_id, name)
    stale = order.etag if BEFORE[name] else "r99"
    for etag in (stale, "not-an-etag", "r", "r-1", "r0" + ready.etag[1:], "r" + "9" * 30):
        failure = await rpc_error(
            call(orders, transition, store_id, ready, etag=etag), Code.ABORTED
        )
        assert failure.error_info is not None
        assert failure.error_info.reason == "ETAG_MISMATCH"
        assert failure.error_info.metadata["current_etag"] == ready.etag
    got = (
        await orders.GetOrder(pb.GetOrderRequest(store_id=store_id, order_id=ready.order_id))
    ).order
    assert got == ready


async def test_a_stale_etag_wins_over_a_wrong_status(orders, store_id):
    order = await create_order(orders, store_id)
    paid = await move(orders, PAY, store_id, order)
    failure = await rpc_error(call(orders, PAY, store_id, paid, etag=order.etag), Code.ABORTED)
    assert failure.error_info.reason == "ETAG_MISMATCH"
    # With the current etag, the status is what is wrong.
    failure = await rpc_error(
        call(orders, PAY, store_id, paid, etag=paid.etag), Code.FAILED_PRECONDITION
    )
    assert failure.error_info.reason == "INVALID_STATUS_TRANSITION"


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_a_retry_after_success_answers_the_same(orders, store_id, name):
    transition = TRANSITIONS[name]
    order = await order_ready_for(orders, store_id, name)
    request_id = str(uuid.uuid4())
    first = await move(orders, transition, store_id, order, etag=order.etag, request_id=request_id)
    # The same request again, its etag stale by now: the first answer, not an error.
    retried = await move(
        orders, transition, store_id, order, etag=order.etag, request_id=request_id
    )
    assert retried == first
    # In upper case the request_id is the same UUID.
    again = await move(
        orders, transition, store_id, order, etag=order.etag, request_id=request_id.upper()
    )
    assert again == first


async def test_a_retry_answers_with_the_order_as_its_change_left_it(orders, store_id, sessions):
    order = await create_order(orders, store_id)
    request_id = str(uuid.uuid4())
    paid = await move(orders, PAY, store_id, order, request_id=request_id)
    shipped = await move(orders, SHIP, store_id, paid, tracking_reference="1Z-7")
    retried = await move(orders, PAY, store_id, order, request_id=request_id)
    assert retried == paid
    assert (retried.status, retried.tracking_reference) == (S.ORDER_STATUS_PAID, "")
    assert shipped.etag != paid.etag
    async with sessions() as session:
        revisions = await session.scalar(
            select(func.count())
            .select_from(OrderRevision)
            .where(OrderRevision.store_id == store_id, OrderRevision.order_id == order.order_id)
        )
    assert revisions == 2


@pytest.mark.parametrize(
    ("name", "different"),
    [
        ("pay", {"etag": "r1"}),
        ("ship", {"tracking_reference": "another"}),
        ("deliver", {"etag": "r3"}),
        ("cancel", {"reason": "another reason"}),
    ],
)
async def test_a_request_id_reused_for_another_request_is_invalid(
    orders, store_id, name, different
):
    transition = TRANSITIONS[name]
    order = await order_ready_for(orders, store_id, name)
    request_id = str(uuid.uuid4())
    await move(orders, transition, store_id, order, request_id=request_id)
    for fields in (different, {}):
        other = await order_ready_for(orders, store_id, name) if not fields else order
        failure = await rpc_error(
            call(orders, transition, store_id, other, request_id=request_id, **fields),
            Code.INVALID_ARGUMENT,
        )
        assert failure.violated_fields == {"request_id"}


async def test_a_failed_try_leaves_its_request_id_free(orders, store_id):
    order = await create_order(orders, store_id)
    request_id = str(uuid.uuid4())
    await rpc_error(
        call(orders, SHIP, store_id, order, request_id=request_id), Code.FAILED_PRECONDITION
    )
    paid = await move(orders, PAY, store_id, order)
    shipped = await move(orders, SHIP, store_id, paid, request_id=request_id)
    assert shipped.status == S.ORDER_STATUS_SHIPPED


async def test_a_malformed_request_id_is_invalid(orders, store_id):
    order = await create_order(orders, store_id)
    failure = await rpc_error(
        call(orders, PAY, store_id, order, request_id="not-a-uuid"), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"request_id"}


# Every status, and the transitions that may not leave it.
NOT_FROM = {
    "PENDING": (SHIP, DELIVER),
    "PAID": (PAY, DELIVER),
    "SHIPPED": (PAY, SHIP, CANCEL),
    "DELIVERED": (PAY, SHIP, DELIVER, CANCEL),
    "CANCELLED": (PAY, SHIP, DELIVER, CANCEL),
}
REACH = {
    "PENDING": [],
    "PAID": [PAY],
    "SHIPPED": [PAY, SHIP],
    "DELIVERED": [PAY, SHIP, DELIVER],
    "CANCELLED": [CANCEL],
}


@pytest.mark.parametrize(
    ("current", "transition"),
    [
        (status, transition)
        for status, transitions in NOT_FROM.items()
        for transition in transitions
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
async def test_a_forbidden_transition_names_the_current_status(
    orders, store_id, current, transition
):
    order = await create_order(orders, store_id)
    for step in REACH[current]:
        order = await move(orders, step, store_id, order)
    # A request_id does not turn a refusal into an answer.
    failure = await rpc_error(
        call(orders, transition, store_id, order, etag=order.etag, request_id=str(uuid.uuid4())),
        Code.FAILED_PRECONDITION,
    )
    assert failure.error_info.reason == "INVALID_STATUS_TRANSITION"
    assert failure.error_info.domain == "commerce.orders.v1"
    assert failure.error_info.metadata["current_status"] == current
    assert failure.error_info.metadata["requested_status"] == S.Name(transition[3]).removeprefix(
        "ORDER_STATUS_"
    )
    got = (
        await orders.GetOrder(pb.GetOrderRequest(store_id=store_id, order_id=order.order_id))
    ).order
    assert got == order


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "two\nlines"])
async def test_a_cancel_needs_a_reason_of_1_to_200_characters(orders, store_id, reason):
    order = await create_order(orders, store_id)
    failure = await rpc_error(
        call(orders, CANCEL, store_id, order, reason=reason), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"reason"}
    assert (
        await move(orders, CANCEL, store_id, order, reason="x" * 200)
    ).cancel_reason == "x" * 200


async def test_a_tracking_reference_has_at_most_100_characters(orders, store_id):
    order = await order_ready_for(orders, store_id, "ship")
    failure = await rpc_error(
        call(orders, SHIP, store_id, order, tracking_reference="x" * 101), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"tracking_reference"}
    shipped = await move(orders, SHIP, store_id, order, tracking_reference="x" * 100)
    assert shipped.tracking_reference == "x" * 100


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_an_order_of_another_store_is_not_found(orders, store_id, other_store_id, name):
    transition = TRANSITIONS[name]
    order = await order_ready_for(orders, other_store_id, name)
    failure = await rpc_error(call(orders, transition, store_id, order), Code.NOT_FOUND)
    assert failure.error_info.reason == "ORDER_NOT_FOUND"
    failure = await rpc_error(
        call(orders, transition, store_id, order, request_id=str(uuid.uuid4())), Code.NOT_FOUND
    )
    got = await orders.GetOrder(
        pb.GetOrderRequest(store_id=other_store_id, order_id=order.order_id)
    )
    assert got.order == order


@pytest.mark.parametrize("order_id", [0, -1])
async def test_a_missing_order_id_is_invalid(orders, store_id, order_id):
    failure = await rpc_error(
        orders.PayOrder(pb.PayOrderRequest(store_id=store_id, order_id=order_id)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"order_id"}


async def test_update_order_status_still_works_and_changes_the_etag(orders, store_id):
    order = await create_order(orders, store_id)
    paid = (
        await orders.UpdateOrderStatus(
            pb.UpdateOrderStatusRequest(
                store_id=store_id, order_id=order.order_id, status=S.ORDER_STATUS_PAID
            )
        )
    ).order
    assert paid.status == S.ORDER_STATUS_PAID
    assert paid.etag != order.etag
    await rpc_error(call(orders, SHIP, store_id, paid, etag=order.etag), Code.ABORTED)
    assert (
        await move(orders, SHIP, store_id, paid, etag=paid.etag)
    ).status == S.ORDER_STATUS_SHIPPED
