"""The commerce-protos package (generated/) on its own: installed alone into a fresh
virtual environment, without the server's code, it calls the real server
(clients/python/walkthrough.py, clients/python/customer_mirror.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from commerce.customers.v1 import customer_pb2, customer_service_pb2
from commerce.events.v1 import event_service_pb2, event_service_pb2_grpc
from google.protobuf import field_mask_pb2, json_format

from tests.process import ROOT, walkthrough

ALLOWED = {"commerce-protos", "protobuf", "grpcio", "googleapis-common-protos", "pip", "setuptools"}


@pytest.fixture(scope="session")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv with only commerce-protos installed (from a copy
    of generated/, so that the build leaves nothing in the checkout)."""
    directory = tmp_path_factory.mktemp("client")
    source = directory / "generated"
    shutil.copytree(
        ROOT / "generated", source, ignore=shutil.ignore_patterns("*.egg-info", "build")
    )
    subprocess.run([sys.executable, "-m", "venv", str(directory / "venv")], check=True)
    python = directory / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
    )
    return python


def test_the_package_holds_only_the_stubs_and_their_three_dependencies(client_python):
    listed = subprocess.run(
        [client_python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        package["name"].lower().replace("_", "-"): package["version"]
        for package in json.loads(listed)
    }
    assert set(installed) - ALLOWED <= {"typing-extensions"}  # grpcio's own dependency
    declared = tomllib.loads((ROOT / "generated" / "pyproject.toml").read_text())["project"]
    assert installed["commerce-protos"] == declared["version"]
    # Typed: the .pyi stubs and PEP 561 markers are in the wheel.
    probe = "import commerce.orders.v1 as p, pathlib; print(pathlib.Path(p.__path__[0]))"
    package = Path(
        subprocess.run(
            [client_python, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert {"order_pb2.pyi", "order_service_pb2_grpc.pyi", "py.typed"} <= {
        p.name for p in package.iterdir()
    }
    # commerce.client, the hand-written way to connect, ships typed beside the stubs.
    probe = "import commerce.client as c, pathlib; print(pathlib.Path(c.__file__).parent)"
    helper = Path(
        subprocess.run(
            [client_python, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert {"__init__.py", "py.typed"} <= {p.name for p in helper.iterdir()}
    no_server = subprocess.run(
        [client_python, "-c", "import services"], capture_output=True, check=False, cwd="/"
    )
    assert no_server.returncode != 0


async def test_the_package_alone_calls_the_server(client_python, server, store_id, customers):
    seen = await walkthrough(
        str(client_python),
        str(ROOT / "clients" / "python" / "walkthrough.py"),
        f"127.0.0.1:{server.port}",
        str(store_id),
        cwd="/",  # nothing of the checkout on its path
    )
    assert seen["duplicate_reason"] == "EMAIL_TAKEN"
    assert seen["total_spent"] == 3897
    assert seen["order_event_cursor"], "the walkthrough followed the feed to the order's event"
    customer = (
        await customers.GetCustomer(
            customer_service_pb2.GetCustomerRequest(
                store_id=store_id, customer_id=seen["customer_id"]
            )
        )
    ).customer
    assert customer.email.startswith("python-")


async def _customer_events_after(channel, store_id: int, cursor: str) -> int:
    """How many customer events the feed has placed after `cursor`."""
    feed = event_service_pb2_grpc.EventServiceStub(channel)
    request = event_service_pb2.ListEventsRequest(
        store_id=store_id, after_cursor=cursor, page_size=1000
    )
    page = await feed.ListEvents(request)
    return sum(event.type.startswith("commerce.customers.v1.") for event in page.events)


async def test_a_mirror_loads_every_customer_then_follows_their_changes(
    client_python, server, channel, store_id, customers, tmp_path
):
    """clients/python/customer_mirror.py: a copy of the store's customers made with
    ExportCustomers, kept in a state file, later brought up to date from the feed
    after its cursor, equals the store's customers; an erased one keeps no
    personal data in it either."""
    made = []
    for n in range(3):
        response = await customers.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                store_id=store_id, email=f"mirror-{n}@example.com", first_name=f"Mirror {n}"
            )
        )
        made.append(response.customer.customer_id)
    state = tmp_path / "mirror.json"
    mirror = (
        str(client_python),
        str(ROOT / "clients" / "python" / "customer_mirror.py"),
        f"127.0.0.1:{server.port}",
        str(store_id),
        "--state",
        str(state),
    )
    first = await walkthrough(*mirror, cwd="/")
    assert (first["loaded"], first["applied"]) == (3, 0)

    # Changes after the copy's cursor: a rename, a tag, a deactivation, an erasure.
    await customers.UpdateCustomer(
        customer_service_pb2.UpdateCustomerRequest(
            store_id=store_id,
            customer_id=made[0],
            customer=customer_pb2.Customer(first_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        )
    )
    await customers.AddCustomerTags(
        customer_service_pb2.AddCustomerTagsRequest(
            store_id=store_id, customer_id=made[0], tags=["VIP"]
        )
    )
    await customers.SetCustomerStatus(
        customer_service_pb2.SetCustomerStatusRequest(
            store_id=store_id, customer_id=made[1], status=customer_pb2.CUSTOMER_STATUS_INACTIVE
        )
    )
    await customers.EraseCustomer(
        customer_service_pb2.EraseCustomerRequest(store_id=store_id, customer_id=made[2])
    )
    # The relay places them: wait until it has (seen only through the feed).
    while await _customer_events_after(channel, store_id, first["cursor"]) < 4:  # noqa: ASYNC110
        await asyncio.sleep(0.05)

    second = await walkthrough(*mirror, cwd="/")
    assert (second["loaded"], second["applied"]) == (0, 4)
    listed = await customers.ListCustomers(
        customer_service_pb2.ListCustomersRequest(store_id=store_id)
    )
    assert second["customers"] == [
        json_format.MessageToDict(customer) for customer in listed.customers
    ]
    assert "mirror-2@example.com" not in state.read_text()
