"""The protos' dependencies flow one way: orders and loyalty import customers, never the
reverse, and neither imports the other."""

from __future__ import annotations

from pathlib import Path

from commerce.customers.v1 import customer_pb2, customer_service_pb2
from commerce.loyalty.v1 import customer_loyalty_service_pb2, loyalty_pb2
from commerce.orders.v1 import customer_order_service_pb2, order_pb2, order_service_pb2

PROTOS = Path(__file__).resolve().parents[2] / "protos"


def imported_files(descriptor) -> set[str]:
    """Every .proto file a file descriptor imports, directly or not."""
    seen: set[str] = set()
    pending = list(descriptor.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.name not in seen:
            seen.add(dependency.name)
            pending += dependency.dependencies
    return seen


def test_customers_protos_import_nothing_of_orders():
    for path in (PROTOS / "commerce/customers").rglob("*.proto"):
        assert "commerce/orders" not in path.read_text(), path
    for module in (customer_pb2, customer_service_pb2):
        assert not any(
            name.startswith("commerce/orders/") for name in imported_files(module.DESCRIPTOR)
        )


def test_orders_protos_build_on_the_customers_messages():
    assert "commerce/customers/v1/customer.proto" in imported_files(order_pb2.DESCRIPTOR)
    customer_field = order_pb2.Order.DESCRIPTOR.fields_by_name["customer"]
    assert customer_field.message_type.full_name == "commerce.customers.v1.Customer"
    for module in (order_service_pb2, customer_order_service_pb2):
        assert module.DESCRIPTOR.package == "commerce.orders.v1"


def test_loyalty_protos_build_on_customers_only():
    imported = imported_files(customer_loyalty_service_pb2.DESCRIPTOR)
    assert "commerce/customers/v1/customer.proto" in imported
    assert not any(name.startswith("commerce/orders/") for name in imported)
    response = customer_loyalty_service_pb2.GetCustomerLoyaltyResponse.DESCRIPTOR
    customer_field = response.fields_by_name["customer"]
    assert customer_field.message_type.full_name == "commerce.customers.v1.Customer"
    assert loyalty_pb2.DESCRIPTOR.package == "commerce.loyalty.v1"


def test_nothing_else_imports_loyalty():
    for path in PROTOS.rglob("*.proto"):
        if "commerce/loyalty/" not in path.as_posix():
            assert "commerce/loyalty" not in path.read_text(), path
