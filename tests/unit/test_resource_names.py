"""Resource names (services.core.domain.resource_names) and how NotFound names what
it misses."""

from __future__ import annotations

from services.core.domain.errors import NotFound
from services.core.domain.resource_names import name_in_scope, store_scope


def test_a_not_found_is_named_in_the_store_in_scope():
    with store_scope(7):
        customer = NotFound("customer", 42)
        address = NotFound("address", 3, collection="addresses", parent=("customers", 42))
        store = NotFound("store", "7")
    assert customer.resource_name == "stores/7/customers/42"
    assert (customer.resource_type, customer.resource_id) == ("customer", "42")
    assert customer.message == "customer 42 not found"
    assert customer.reason == "CUSTOMER_NOT_FOUND"
    assert address.resource_name == "stores/7/customers/42/addresses/3"
    assert store.resource_name == "stores/7"


def test_scopes_nest_and_end():
    with store_scope(7):
        with store_scope(8):
            assert name_in_scope("orders", 9) == "stores/8/orders/9"
        assert name_in_scope("orders", 9) == "stores/7/orders/9"
    # Outside any store: relative to the store.
    assert name_in_scope("orders", 9) == "orders/9"
    assert NotFound("order", "9").resource_name == "orders/9"
