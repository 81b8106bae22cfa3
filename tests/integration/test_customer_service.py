"""The customers service layer on a real database, without gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import bcrypt
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Dialect

from services.core.db.statements import Row, Statement, Transaction
from services.core.domain.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from services.core.domain.pagination import PageTokenCodec
from services.core.domain.passwords import PasswordHasher
from services.customers.models import LoginThrottle
from services.customers.rules import LoginPolicy
from services.customers.service import CustomerService, NewCustomer

PASSWORD = "correct horse battery"


class CountingHasher(PasswordHasher):
    """A real hasher that counts the bcrypt checks it runs."""

    def __init__(self) -> None:
        super().__init__(rounds=4, max_workers=2)
        self.checks = 0

    async def _run(self, function, *args):
        if function is bcrypt.checkpw:
            self.checks += 1
        return await super()._run(function, *args)


@pytest.fixture
async def hasher():
    hasher = CountingHasher()
    yield hasher
    hasher.close()


@pytest.fixture
def service(database, hasher) -> CustomerService:
    return CustomerService(database, hasher, PageTokenCodec("secret"))


async def test_create_then_get(service, store_id):
    created = await service.create_customer(
        store_id, NewCustomer(email="svc@example.com", first_name="Sv")
    )
    fetched = await service.get_customer(store_id, created.customer_id)
    assert (fetched.email, fetched.first_name, fetched.customer_number) == (
        "svc@example.com",
        "Sv",
        "C-000001",
    )


async def test_errors_are_domain_errors(service, store_id, other_store_id):
    created = await service.create_customer(store_id, NewCustomer(email="dup@example.com"))
    with pytest.raises(AlreadyExists):
        await service.create_customer(store_id, NewCustomer(email="Dup@Example.com"))
    with pytest.raises(NotFound):
        await service.get_customer(other_store_id, created.customer_id)
    with pytest.raises(InvalidArgument) as invalid:
        await service.create_customer(store_id, NewCustomer(email="nope", password="1"))
    assert {v.field for v in invalid.value.violations} == {"email", "password"}


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("unknown@example.com", PASSWORD),  # no such customer
        ("known@example.com", "wrong password"),  # wrong password
        ("nopass@example.com", PASSWORD),  # customer without a password
        ("known@example.com", "ü" * 40),  # longer than bcrypt can check
    ],
)
async def test_every_failed_login_costs_one_bcrypt_check(
    service, hasher, store_id, email, password
):
    await service.create_customer(
        store_id, NewCustomer(email="known@example.com", password=PASSWORD)
    )
    await service.create_customer(store_id, NewCustomer(email="nopass@example.com"))
    hasher.checks = 0
    with pytest.raises(Unauthenticated):
        await service.authenticate(store_id, email, password, caller="test")
    assert hasher.checks == 1


async def test_inactive_customer_cannot_log_in_even_with_the_right_password(
    service, hasher, store_id
):
    created = await service.create_customer(
        store_id, NewCustomer(email="off@example.com", password=PASSWORD)
    )
    await service.set_customer_status(store_id, created.customer_id, active=False)
    hasher.checks = 0
    with pytest.raises(Unauthenticated):
        await service.authenticate(store_id, "off@example.com", PASSWORD, caller="test")
    assert hasher.checks == 1


async def test_list_uses_keyset_tokens(service, store_id):
    for index in range(5):
        await service.create_customer(store_id, NewCustomer(email=f"k{index}@example.com"))
    first = await service.list_customers(store_id, page_size=2)
    second = await service.list_customers(store_id, page_size=2, page_token=first.next_page_token)
    last = await service.list_customers(store_id, page_size=2, page_token=second.next_page_token)
    assert [c.customer_id for c in first.customers + second.customers + last.customers] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert last.next_page_token == ""


class BarrierHasher(CountingHasher):
    """Holds every hash until `parties` callers are hashing, so that concurrent password
    changes all read the old hash before any of them writes."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = asyncio.Barrier(parties)

    async def hash(self, password: str) -> str:
        await self.barrier.wait()
        return await super().hash(password)


async def test_concurrent_password_changes_never_both_win(database, service, store_id):
    """Two changes that both checked the same current password: the first to write
    wins; the other is ABORTED rather than silently overwriting it."""
    created = await service.create_customer(
        store_id, NewCustomer(email="pw@example.com", password=PASSWORD)
    )
    hasher = BarrierHasher(parties=2)
    racing = CustomerService(database, hasher, PageTokenCodec("secret"))
    try:
        results = await asyncio.gather(
            racing.change_password(store_id, created.customer_id, PASSWORD, "first new secret"),
            racing.change_password(store_id, created.customer_id, PASSWORD, "second new secret"),
            return_exceptions=True,
        )
        assert sum(isinstance(result, Aborted) for result in results) == 1
        winner = (
            "first new secret" if not isinstance(results[0], Exception) else "second new secret"
        )
        authenticated = await service.authenticate(
            store_id, "pw@example.com", winner, caller="test"
        )
        assert authenticated.customer_id == created.customer_id
    finally:
        hasher.close()


# -- brute-force protection ------------------------------------------------------------------


@pytest.mark.parametrize("email", ["known@example.com", "unknown@example.com", "not an email"])
async def test_a_throttled_login_costs_no_bcrypt_check(database, hasher, store_id, email):
    """Known, unknown and impossible emails alike: refused before bcrypt, so guesses
    past the limit take no password thread from real customers."""
    policy = LoginPolicy(per_email=3, per_caller=0, window=timedelta(hours=1))
    service = CustomerService(database, hasher, PageTokenCodec("secret"), login_policy=policy)
    await service.create_customer(
        store_id, NewCustomer(email="known@example.com", password=PASSWORD)
    )
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await service.authenticate(store_id, email, "guess", caller="test")
    hasher.checks = 0
    with pytest.raises(ResourceExhausted) as refused:
        await service.authenticate(store_id, email, PASSWORD, caller="test")
    assert hasher.checks == 0
    assert timedelta(minutes=59) < refused.value.retry_after <= timedelta(hours=1)


async def test_counts_whose_window_passed_are_pruned(database, hasher, sessions, store_id):
    # A window of a microsecond has passed by the next statement.
    policy = LoginPolicy(per_email=3, per_caller=3, window=timedelta(microseconds=1))
    service = CustomerService(database, hasher, PageTokenCodec("secret"), login_policy=policy)

    async def subjects() -> set[str]:
        async with sessions() as session:
            query = select(LoginThrottle.subject).where(LoginThrottle.store_id == store_id)
            return set((await session.scalars(query)).all())

    with pytest.raises(Unauthenticated):
        await service.authenticate(store_id, "first@example.com", "guess", caller="one")
    first = await subjects()
    assert len(first) == 2  # the email's and the caller's
    with pytest.raises(Unauthenticated):
        await service.authenticate(store_id, "second@example.com", "guess", caller="two")
    second = await subjects()
    assert len(second) == 2
    assert not second & first


async def test_a_missing_customer_is_named_in_its_store_without_grpc(service, store_id):
    """The unit of work scopes the names, not only the gRPC layer."""
    with pytest.raises(NotFound) as raised:
        await service.batch_get_customers(store_id, [404])
    assert raised.value.resource_name == f"stores/{store_id}/customers/404"


class CountedStatements(Transaction):
    """Statements of a transaction, the SQL of each (compiled for its database) kept
    in `seen` as they pass."""

    def __init__(self, statements: Transaction, dialect: Dialect, seen: list[str]) -> None:
        self._statements = statements
        self._dialect = dialect
        self.dialect = statements.dialect
        self._seen = seen

    def _saw(self, statement: Statement) -> None:
        self._seen.append(str(statement.statement.compile(dialect=self._dialect)))  # type: ignore[attr-defined]

    async def commit(self) -> None:
        await self._statements.commit()

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Row]:
        self._saw(statement)
        return await self._statements.fetch(statement, params)

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        self._saw(statement)
        await self._statements.execute_many(statement, rows)


async def test_a_batch_reads_its_customers_in_one_statement(service, database, store_id):
    ids = [
        (await service.create_customer(store_id, NewCustomer(f"b{i}@example.com"))).customer_id
        for i in range(3)
    ]
    seen: list[str] = []
    # The seam tracing wraps every unit of work's statements with.
    database.trace_statements = lambda statements, dialect: CountedStatements(
        statements, dialect, seen
    )
    try:
        found = await service.batch_get_customers(store_id, [*ids, ids[0]])
    finally:
        database.trace_statements = None
    assert [customer.customer_id for customer in found] == [*ids, ids[0]]
    assert len([sql for sql in seen if "FROM customers" in sql]) == 1
