"""A client in Go: the walkthrough in clients/go, generated from protos/ with
`buf generate --template buf.gen.go.yaml`, built with `go build` and `go vet`, run
against the real server. It checks every answer itself; this test also reads what it
created back through the Python stubs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from commerce.customers.v1 import customer_service_pb2
from commerce.orders.v1 import customer_order_service_pb2, order_pb2, order_service_pb2

from tests.process import ROOT, walkthrough

GO_CLIENT = ROOT / "clients" / "go"
# Debian's Go libraries (protobuf-go, grpc-go, genproto), which scripts/setup-go installs.
DEBIAN_GOCODE = Path("/usr/share/gocode")
GO_TOOLS = ("go", "protoc-gen-go", "protoc-gen-go-grpc")
GO_LIBRARIES = (
    "google.golang.org/grpc",
    "google.golang.org/protobuf",
    "google.golang.org/genproto",
)


def go_environment() -> dict[str, str]:
    """GOPATH mode: the generated packages first, so that their google.api annotations
    shadow Debian's older copy, then Debian's libraries; nothing from the network."""
    return os.environ | {
        "GOPATH": f"{GO_CLIENT / 'gopath'}:{DEBIAN_GOCODE}",
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
    }


def run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=go_environment(), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def go_walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generates the Go code from protos/, vets and builds the walkthrough, as the
    README says; the path of the program."""
    missing = [tool for tool in GO_TOOLS if shutil.which(tool) is None] + [
        library for library in GO_LIBRARIES if not (DEBIAN_GOCODE / "src" / library).is_dir()
    ]
    if missing:
        pytest.fail(f"the Go client needs {', '.join(missing)}: run scripts/setup-go")
    if not (ROOT / "node_modules").is_dir():
        pytest.fail("generating the Go client needs buf: run scripts/setup-node")
    program = tmp_path_factory.mktemp("go") / "walkthrough"
    run(["npx", "--no-install", "buf", "generate", "--template", "buf.gen.go.yaml"], ROOT)
    source = GO_CLIENT / "walkthrough"
    run(["go", "vet", "."], source)
    run(["go", "build", "-o", str(program), "."], source)
    return program


def managed_block(template: Path) -> list[str]:
    """The lines of a buf.gen template's `managed:` section, comments left out."""
    block: list[str] = []
    for line in template.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if block and not line.startswith(" "):
            break
        if block or line == "managed:":
            block.append(line)
    return block


def test_the_go_template_publishes_the_packages_the_default_one_does():
    default = managed_block(ROOT / "buf.gen.yaml")
    assert "      value: example.com/commerce/gen/go" in default
    assert managed_block(ROOT / "buf.gen.go.yaml") == default


async def test_go_client_walks_through_customers_orders_and_errors(
    go_walkthrough, server, store_id, customers, orders, customer_orders
):
    seen = await walkthrough(
        str(go_walkthrough),
        env={
            "PATH": os.environ["PATH"],
            "COMMERCE_TARGET": f"127.0.0.1:{server.port}",
            "COMMERCE_STORE_ID": str(store_id),
        },
    )

    assert seen["invalidArgumentFields"] == ["email", "password"]
    assert seen["notFoundReason"] == "CUSTOMER_NOT_FOUND"
    # What the Go client created is what Python reads.
    customer_id = int(seen["customerId"])
    customer = (
        await customers.GetCustomer(
            customer_service_pb2.GetCustomerRequest(store_id=store_id, customer_id=customer_id)
        )
    ).customer
    assert (customer.email, customer.first_name) == (seen["email"], "Gopher")
    newest, first = (int(order_id) for order_id in seen["orderIds"])
    placed = (
        await orders.GetOrder(order_service_pb2.GetOrderRequest(store_id=store_id, order_id=first))
    ).order
    assert placed.customer_id == customer_id == placed.customer.customer_id
    assert (placed.order_number, placed.total_minor) == (seen["orderNumber"], 5098)
    assert seen["totalMinor"] == "5098"
    second = (
        await orders.GetOrder(order_service_pb2.GetOrderRequest(store_id=store_id, order_id=newest))
    ).order
    assert [item.sku for item in second.line_items] == ["TEE-2"]
    assert second.status == order_pb2.ORDER_STATUS_PENDING
    count = await customer_orders.GetCustomerOrderCount(
        customer_order_service_pb2.GetCustomerOrderCountRequest(
            store_id=store_id, customer_id=customer_id
        )
    )
    assert count.order_count == 2  # the retried CreateOrder made no third order
