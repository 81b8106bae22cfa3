"""SIGTERM under load: calls already running finish, calls that arrive during the
drain are refused with UNAVAILABLE (which clients retry, elsewhere), never CANCELLED."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path

import grpc
from commerce.customers.v1 import customer_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.helpers import PASSWORD, pb
from tests.process import migrated_sqlite_env, running_server, wait_for


def retry_delay(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay a status carries, in seconds; None without one."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def test_calls_during_shutdown_end_ok_or_unavailable(tmp_path: Path):
    env = migrated_sqlite_env(tmp_path, "Drain") | {"COMMERCE_BCRYPT_ROUNDS": "10"}
    with running_server(tmp_path, env, "--grace-seconds", "30") as server:
        channel = grpc.insecure_channel(server.target)
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        created = customers.CreateCustomer(
            pb.CreateCustomerRequest(store_id=1, email="d@example.com", password=PASSWORD)
        )
        login = pb.AuthenticateCustomerRequest(store_id=1, email="d@example.com", password=PASSWORD)
        read = pb.GetCustomerRequest(store_id=1, customer_id=created.customer.customer_id)
        codes: Counter[grpc.StatusCode] = Counter()
        retry_info: list[bool] = []
        lock = threading.Lock()
        exited = threading.Event()

        def caller(slow: bool) -> None:
            while not exited.is_set():
                try:
                    if slow:
                        customers.AuthenticateCustomer(login, timeout=60)
                    else:
                        customers.GetCustomer(read, timeout=60)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                    if code == grpc.StatusCode.UNAVAILABLE:
                        delay = retry_delay(error)
                        with lock:
                            retry_info.append(delay is not None)
                        # As a well-behaved client does: wait as told (or until the
                        # server is gone, when the test ends).
                        exited.wait(delay or 0.05)
                with lock:
                    codes[code] += 1

        threads = [threading.Thread(target=caller, args=(i % 2 == 0,)) for i in range(8)]
        for thread in threads:
            thread.start()
        wait_for(lambda: codes[grpc.StatusCode.OK] >= 50)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=90)
        exited.set()
        for thread in threads:
            thread.join(timeout=90)
        channel.close()
    assert exit_code == 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert codes[grpc.StatusCode.UNAVAILABLE] > 0  # calls did arrive during the drain
    assert any(retry_info), "no refusal carried a RetryInfo"
