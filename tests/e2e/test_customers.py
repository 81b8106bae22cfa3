"""CustomerService through a real server: create, read, update, status, logins."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from services.customers.models import Customer
from tests.conftest import new_store
from tests.e2e.helpers import PASSWORD, create_customer, pb, unique_email
from tests.errors import rpc_error

Code = grpc.StatusCode
ACTIVE = customer_pb2.CUSTOMER_STATUS_ACTIVE
INACTIVE = customer_pb2.CUSTOMER_STATUS_INACTIVE


async def count_customers(sessions, store_id: int) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.store_id == store_id)
        )


# -- CreateCustomer ------------------------------------------------------------------------


async def test_create_customer_assigns_number_and_timestamps(customers, store_id):
    customer = await create_customer(
        customers,
        store_id,
        email="Ann.Smith@Example.COM",
        password=PASSWORD,
        first_name="  Ann ",
        last_name="Smith",
        phone="+49 (30) 1234-567",
        marketing_consent=True,
        preferred_language="pt-br",
    )
    assert customer.store_id == store_id
    assert customer.customer_id == 1
    assert customer.customer_number == "C-000001"
    assert customer.email == "Ann.Smith@example.com"  # the domain is normalized
    assert (customer.first_name, customer.last_name) == ("Ann", "Smith")
    assert customer.phone == "+49 (30) 1234-567"
    assert customer.marketing_consent is True
    assert customer.preferred_language == "pt-BR"
    assert customer.status == ACTIVE
    assert customer.has_password is True
    assert customer.create_time.seconds > 0
    assert customer.update_time == customer.create_time

    second = await create_customer(customers, store_id)
    assert (second.customer_id, second.customer_number) == (2, "C-000002")
    assert second.has_password is False


async def test_customer_message_never_carries_a_password():
    fields = {field.name for field in customer_pb2.Customer.DESCRIPTOR.fields}
    assert {name for name in fields if "password" in name or "hash" in name} == {"has_password"}


async def test_password_is_stored_only_as_a_bcrypt_hash(customers, store_id, sessions):
    customer = await create_customer(customers, store_id, password=PASSWORD)
    async with sessions() as session:
        stored = await session.get(Customer, (store_id, customer.customer_id))
    assert stored.hashed_password.startswith("$2b$")
    assert PASSWORD not in stored.hashed_password


async def test_duplicate_email_is_already_exists_ignoring_case(customers, store_id, sessions):
    await create_customer(customers, store_id, email="dup@example.com")
    failure = await rpc_error(
        customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=store_id, email="DUP@example.com")
        ),
        Code.ALREADY_EXISTS,
    )
    assert failure.error_info.reason == "EMAIL_TAKEN"
    assert failure.error_info.domain == "commerce.customers.v1"
    assert await count_customers(sessions, store_id) == 1


async def test_the_same_email_may_exist_in_two_stores(customers, store_id, other_store_id):
    first = await create_customer(customers, store_id, email="same@example.com")
    second = await create_customer(customers, other_store_id, email="same@example.com")
    assert (first.store_id, second.store_id) == (store_id, other_store_id)


async def test_invalid_create_names_every_bad_field_and_writes_nothing(
    customers, store_id, sessions
):
    request = pb.CreateCustomerRequest(
        store_id=store_id,
        email="not-an-email",
        password="short",
        first_name="x" * 101,
        last_name="tab\there",
        phone="call me maybe",
        preferred_language="not a language",
    )
    failure = await rpc_error(customers.CreateCustomer(request), Code.INVALID_ARGUMENT)
    assert failure.violated_fields == {
        "email",
        "password",
        "first_name",
        "last_name",
        "phone",
        "preferred_language",
    }
    assert await count_customers(sessions, store_id) == 0


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"email": ""}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"password": "é" * 37}, "password"),  # 74 bytes: over bcrypt's 72-byte limit
        ({"phone": "1" * 51}, "phone"),
        ({"last_name": "y" * 101}, "last_name"),
    ],
)
async def test_create_rejects_each_limit(customers, store_id, fields, bad_field):
    request = pb.CreateCustomerRequest(store_id=store_id, **({"email": unique_email()} | fields))
    failure = await rpc_error(customers.CreateCustomer(request), Code.INVALID_ARGUMENT)
    assert failure.violated_fields == {bad_field}


async def test_a_72_byte_password_is_accepted_and_works(customers, store_id):
    password = "é" * 36  # exactly 72 bytes
    customer = await create_customer(customers, store_id, email=unique_email(), password=password)
    response = await customers.AuthenticateCustomer(
        pb.AuthenticateCustomerRequest(store_id=store_id, email=customer.email, password=password)
    )
    assert response.customer.customer_id == customer.customer_id


async def test_concurrent_creates_with_one_email_have_one_winner(customers, store_id, sessions):
    email = unique_email("race")
    calls = [
        customers.CreateCustomer(pb.CreateCustomerRequest(store_id=store_id, email=email))
        for _ in range(12)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [result for result in results if not isinstance(result, Exception)]
    losers = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 11
    assert {loser.code() for loser in losers} == {Code.ALREADY_EXISTS}
    assert await count_customers(sessions, store_id) == 1


async def test_concurrent_creates_get_distinct_numbers(customers, store_id):
    created = await asyncio.gather(*(create_customer(customers, store_id) for _ in range(15)))
    assert sorted(c.customer_id for c in created) == list(range(1, 16))
    assert len({c.customer_number for c in created}) == 15


# -- stores --------------------------------------------------------------------------------


async def test_unknown_store_is_not_found(customers):
    failure = await rpc_error(
        customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=987654321, email=unique_email())
        ),
        Code.NOT_FOUND,
    )
    assert failure.error_info.reason == "STORE_NOT_FOUND"
    assert failure.resource_info.resource_type == "store"


async def test_inactive_store_is_failed_precondition(customers, sessions):
    inactive = await new_store(sessions, active=False)
    failure = await rpc_error(
        customers.GetCustomer(pb.GetCustomerRequest(store_id=inactive, customer_id=1)),
        Code.FAILED_PRECONDITION,
    )
    assert failure.error_info.reason == "STORE_INACTIVE"


@pytest.mark.parametrize("store", [0, -5])
async def test_store_id_must_be_positive(customers, store):
    failure = await rpc_error(
        customers.ListCustomers(pb.ListCustomersRequest(store_id=store)), Code.INVALID_ARGUMENT
    )
    assert failure.violated_fields == {"store_id"}


# -- GetCustomer ---------------------------------------------------------------------------


async def test_get_customer_returns_what_create_returned(customers, store_id):
    created = await create_customer(customers, store_id, first_name="Bea")
    response = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert response.customer == created


async def test_get_unknown_customer_is_not_found(customers, store_id):
    failure = await rpc_error(
        customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=404)),
        Code.NOT_FOUND,
    )
    assert failure.error_info.reason == "CUSTOMER_NOT_FOUND"
    assert failure.resource_info.resource_name == f"stores/{store_id}/customers/404"


async def test_get_with_non_positive_id_is_invalid(customers, store_id):
    failure = await rpc_error(
        customers.GetCustomer(pb.GetCustomerRequest(store_id=store_id, customer_id=0)),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"customer_id"}


# -- UpdateCustomer ------------------------------------------------------------------------


def update(store_id: int, customer_id: int, paths: list[str] | None = None, **fields):
    return pb.UpdateCustomerRequest(
        store_id=store_id,
        customer_id=customer_id,
        customer=customer_pb2.Customer(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths or []),
    )


async def test_update_changes_only_masked_fields(customers, store_id):
    created = await create_customer(customers, store_id, first_name="Cid", last_name="Old")
    response = await customers.UpdateCustomer(
        update(
            store_id,
            created.customer_id,
            ["last_name", "marketing_consent"],
            first_name="Ignored",
            last_name="New",
            marketing_consent=True,
        )
    )
    updated = response.customer
    assert (updated.first_name, updated.last_name) == ("Cid", "New")
    assert updated.marketing_consent is True
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert updated.create_time == created.create_time


async def test_update_without_mask_changes_the_populated_fields(customers, store_id):
    created = await create_customer(customers, store_id, first_name="Dee", phone="123")
    response = await customers.UpdateCustomer(
        update(store_id, created.customer_id, preferred_language="de")
    )
    assert response.customer.preferred_language == "de"
    assert (response.customer.first_name, response.customer.phone) == ("Dee", "123")


async def test_update_with_star_replaces_every_writable_field(customers, store_id):
    created = await create_customer(customers, store_id, first_name="Eve", phone="123")
    email = unique_email()
    response = await customers.UpdateCustomer(
        update(store_id, created.customer_id, ["*"], email=email)
    )
    assert response.customer.email == email
    assert (response.customer.first_name, response.customer.phone) == ("", "")


@pytest.mark.parametrize(
    "path", ["customer_number", "store_id", "status", "create_time", "nope", "password"]
)
async def test_update_rejects_read_only_and_unknown_paths(customers, store_id, path):
    created = await create_customer(customers, store_id)
    failure = await rpc_error(
        customers.UpdateCustomer(update(store_id, created.customer_id, [path])),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"update_mask"}


async def test_update_reports_bad_values_under_customer(customers, store_id):
    created = await create_customer(customers, store_id)
    failure = await rpc_error(
        customers.UpdateCustomer(
            update(store_id, created.customer_id, ["email", "phone"], email="x", phone="?")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"customer.email", "customer.phone"}
    unchanged = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert unchanged.customer == created


async def test_update_to_a_taken_email_is_already_exists(customers, store_id):
    await create_customer(customers, store_id, email="taken@example.com")
    other = await create_customer(customers, store_id)
    await rpc_error(
        customers.UpdateCustomer(
            update(store_id, other.customer_id, ["email"], email="TAKEN@example.com")
        ),
        Code.ALREADY_EXISTS,
    )


async def test_update_may_change_the_case_of_its_own_email(customers, store_id):
    created = await create_customer(customers, store_id, email="case@example.com")
    response = await customers.UpdateCustomer(
        update(store_id, created.customer_id, ["email"], email="CASE@example.com")
    )
    assert response.customer.email == "CASE@example.com"


async def test_update_of_unknown_customer_is_not_found(customers, store_id):
    await rpc_error(customers.UpdateCustomer(update(store_id, 999, ["first_name"])), Code.NOT_FOUND)


# -- SetCustomerStatus ---------------------------------------------------------------------


async def test_set_status_deactivates_and_reactivates(customers, store_id):
    created = await create_customer(customers, store_id)
    request = pb.SetCustomerStatusRequest(store_id=store_id, customer_id=created.customer_id)
    request.status = INACTIVE
    assert (await customers.SetCustomerStatus(request)).customer.status == INACTIVE
    got = await customers.GetCustomer(
        pb.GetCustomerRequest(store_id=store_id, customer_id=created.customer_id)
    )
    assert got.customer.status == INACTIVE
    request.status = ACTIVE
    assert (await customers.SetCustomerStatus(request)).customer.status == ACTIVE


@pytest.mark.parametrize("status", [customer_pb2.CUSTOMER_STATUS_UNSPECIFIED, 42])
async def test_set_status_needs_a_real_status(customers, store_id, status):
    created = await create_customer(customers, store_id)
    failure = await rpc_error(
        customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(
                store_id=store_id, customer_id=created.customer_id, status=status
            )
        ),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"status"}


async def test_set_status_of_unknown_customer_is_not_found(customers, store_id):
    await rpc_error(
        customers.SetCustomerStatus(
            pb.SetCustomerStatusRequest(store_id=store_id, customer_id=77, status=ACTIVE)
        ),
        Code.NOT_FOUND,
    )


# -- AuthenticateCustomer ------------------------------------------------------------------


def login(store_id: int, email: str, password: str) -> pb.AuthenticateCustomerRequest:
    return pb.AuthenticateCustomerRequest(store_id=store_id, email=email, password=password)


async def test_authenticate_returns_the_customer_ignoring_email_case(customers, store_id):
    created = await create_customer(
        customers, store_id, email="login@example.com", password=PASSWORD
    )
    response = await customers.AuthenticateCustomer(login(store_id, " LOGIN@example.com", PASSWORD))
    assert response.customer == created


async def test_every_failed_login_looks_the_same(customers, store_id):
    await create_customer(customers, store_id, email="wrong@example.com", password=PASSWORD)
    await create_customer(customers, store_id, email="nopass@example.com")
    inactive = await create_customer(
        customers, store_id, email="inactive@example.com", password=PASSWORD
    )
    await customers.SetCustomerStatus(
        pb.SetCustomerStatusRequest(
            store_id=store_id, customer_id=inactive.customer_id, status=INACTIVE
        )
    )
    attempts = [
        login(store_id, "unknown@example.com", PASSWORD),
        login(store_id, "wrong@example.com", "not the password"),
        login(store_id, "nopass@example.com", PASSWORD),
        login(store_id, "nopass@example.com", ""),
        login(store_id, "inactive@example.com", PASSWORD),
        login(store_id, "not an email", PASSWORD),
        login(store_id, "wrong@example.com", "x" * 200),
    ]
    failures = [
        await rpc_error(customers.AuthenticateCustomer(a), Code.UNAUTHENTICATED) for a in attempts
    ]
    assert {(f.message, f.error_info.reason) for f in failures} == {
        ("invalid email or password", "INVALID_CREDENTIALS")
    }


# -- ChangeCustomerPassword ----------------------------------------------------------------


def change(store_id, customer_id, current, new):
    return pb.ChangeCustomerPasswordRequest(
        store_id=store_id, customer_id=customer_id, current_password=current, new_password=new
    )


async def test_change_password_replaces_the_old_one(customers, store_id):
    created = await create_customer(customers, store_id, password=PASSWORD)
    await customers.ChangeCustomerPassword(
        change(store_id, created.customer_id, PASSWORD, "a new secret")
    )
    await customers.AuthenticateCustomer(login(store_id, created.email, "a new secret"))
    await rpc_error(
        customers.AuthenticateCustomer(login(store_id, created.email, PASSWORD)),
        Code.UNAUTHENTICATED,
    )


async def test_change_password_with_wrong_current_is_unauthenticated(customers, store_id):
    created = await create_customer(customers, store_id, password=PASSWORD)
    await rpc_error(
        customers.ChangeCustomerPassword(
            change(store_id, created.customer_id, "guess", "a new secret")
        ),
        Code.UNAUTHENTICATED,
    )
    await customers.AuthenticateCustomer(login(store_id, created.email, PASSWORD))


async def test_change_password_sets_a_first_password(customers, store_id):
    created = await create_customer(customers, store_id)
    response = await customers.ChangeCustomerPassword(
        change(store_id, created.customer_id, "", PASSWORD)
    )
    assert response.customer.has_password is True
    await customers.AuthenticateCustomer(login(store_id, created.email, PASSWORD))


async def test_change_password_rejects_a_weak_new_password(customers, store_id):
    created = await create_customer(customers, store_id, password=PASSWORD)
    failure = await rpc_error(
        customers.ChangeCustomerPassword(change(store_id, created.customer_id, PASSWORD, "short")),
        Code.INVALID_ARGUMENT,
    )
    assert failure.violated_fields == {"new_password"}


async def test_change_password_of_unknown_customer_is_not_found(customers, store_id):
    await rpc_error(
        customers.ChangeCustomerPassword(change(store_id, 555, PASSWORD, "a new secret")),
        Code.NOT_FOUND,
    )
