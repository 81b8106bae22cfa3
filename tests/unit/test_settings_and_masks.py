from __future__ import annotations

import pytest
from commerce.customers.v1 import customer_pb2
from google.protobuf import field_mask_pb2
from pydantic import ValidationError

from services.core.domain.errors import InvalidArgument
from services.core.rpc.convert import masked_changes
from services.core.settings import Settings

WRITABLE = ("email", "first_name", "last_name", "marketing_consent")


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_their_async_driver(given, used):
    assert Settings(database_url=given).database_url == used


def test_database_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    assert Settings().database_url == "postgresql+asyncpg://env@h/db"


@pytest.mark.parametrize(
    "field", [{"database_url": "nonsense"}, {"bcrypt_rounds": 3}, {"db_pool_size": 0}]
)
def test_bad_settings_are_refused(field):
    with pytest.raises(ValidationError):
        Settings(**field)


@pytest.mark.parametrize(
    ("database_url", "read_database_url"),
    [("sqlite:///x.db", "postgresql://u@replica/db"), ("postgresql://u@h/db", "sqlite:///x.db")],
)
def test_a_read_replica_needs_postgresql(database_url, read_database_url):
    with pytest.raises(ValidationError, match="read_database_url"):
        Settings(database_url=database_url, read_database_url=read_database_url)


def test_a_read_replica_of_postgresql_gets_its_driver():
    settings = Settings(database_url="postgresql://u@h/db", read_database_url="postgres://u@r/db")
    assert settings.read_database_url == "postgresql+asyncpg://u@r/db"
    assert Settings(database_url="postgresql://u@h/db").read_database_url == ""


def changes(paths, **fields):
    return masked_changes(
        field_mask_pb2.FieldMask(paths=paths), customer_pb2.Customer(**fields), WRITABLE
    )


def test_mask_paths_pick_fields_even_when_empty():
    assert changes(["first_name", "marketing_consent"], last_name="x") == {
        "first_name": "",
        "marketing_consent": False,
    }


def test_an_empty_mask_picks_the_populated_writable_fields():
    assert changes([], first_name="Ann", customer_number="C-1") == {"first_name": "Ann"}


def test_star_picks_every_writable_field():
    assert set(changes(["*"])) == set(WRITABLE)


def test_other_paths_are_invalid_and_all_reported():
    with pytest.raises(InvalidArgument) as raised:
        changes(["first_name", "customer_number", "bogus"])
    assert [v.field for v in raised.value.violations] == ["update_mask", "update_mask"]
    assert "customer_number" in raised.value.violations[0].description
