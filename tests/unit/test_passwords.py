from __future__ import annotations

import asyncio

import pytest

from services.core import deadlines
from services.core.domain.errors import Overloaded
from services.core.domain.passwords import PasswordHasher, password_problem


@pytest.fixture
def hasher():
    hasher = PasswordHasher(rounds=4, max_workers=2)
    yield hasher
    hasher.close()


async def test_hash_and_verify(hasher):
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct horse", hashed) is True
    assert await hasher.verify("wrong horse", hashed) is False


async def test_verify_without_hash_or_with_overlong_input_is_false(hasher):
    hashed = await hasher.hash("correct horse")
    assert await hasher.verify("correct horse", None) is False
    assert await hasher.verify("x" * 73, hashed) is False


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("1234567", "at least 8"),
        ("é" * 37, "at most 72 bytes"),
        ("12345678", None),
        ("é" * 36, None),
    ],
)
def test_password_rules(password, problem):
    found = password_problem(password)
    assert (found is None) if problem is None else (problem in found)


async def test_hashing_leaves_the_event_loop_free():
    """While a cost-13 hash (~0.5 s of CPU) runs, the loop keeps ticking. Were bcrypt run
    on the loop, not one tick would happen before it finished."""
    hasher = PasswordHasher(rounds=13, max_workers=1)
    try:
        hashing = asyncio.ensure_future(hasher.hash("correct horse"))
        ticks = 0
        while not hashing.done():
            await asyncio.sleep(0.005)
            ticks += 1
        await hashing
    finally:
        hasher.close()
    assert ticks >= 10


async def test_a_check_that_cannot_end_within_the_deadline_is_refused_at_once():
    hasher = PasswordHasher(rounds=10, max_workers=2)  # checks of tens of milliseconds
    hashed = await hasher.hash("correct horse")
    # Both threads busy with checks without a deadline, a third caller in a hurry.
    busy = [asyncio.ensure_future(hasher.hash("busy horse")) for _ in range(2)]
    await asyncio.sleep(0)  # let them reach the pool
    with deadlines.bounded_by(hasher.queue.expected_wait() / 2):
        with pytest.raises(Overloaded) as refused:
            await hasher.verify("correct horse", hashed)
        assert refused.value.retry_after.total_seconds() > 0
    with deadlines.bounded_by(60):
        assert await hasher.verify("correct horse", hashed) is True
    await asyncio.gather(*busy)
    hasher.close()
