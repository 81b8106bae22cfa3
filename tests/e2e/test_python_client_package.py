"""The commerce-protos package (generated/) on its own: installed alone into a fresh
virtual environment, without the server's code, it calls the real server
(clients/python/walkthrough.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from commerce.customers.v1 import customer_service_pb2

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
