"""What an operator sees when something is wrong: one or two lines naming the problem
and the setting, a non-zero exit, never a traceback. Each test runs the real
`commerce` command as a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.process import (
    COMMERCE,
    ROOT,
    clean_environment,
    commerce,
    free_port,
    health_status,
    listeners,
    migrated_sqlite_env,
    running_server,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

REFUSED = "postgresql://nobody@127.0.0.1:1/x"
MISSING = "postgresql://postgres@127.0.0.1:5432/commerce_no_such_database"


def assert_short_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert 1 <= len(lines) <= 2, result.stderr
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["stores", "list"],
        ["stores", "create", "--name", "X"],
        ["stores", "deactivate", "1"],
        ["migrate"],
    ],
)
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (REFUSED, "Connect call failed"),
        (MISSING, "does not exist"),
        ("mysql://x/y", "mysql:// is not supported"),
        ("sqlite:////no/such/directory/x.db", "no such directory: /no/such/directory"),
    ],
)
def test_a_database_problem_is_a_short_error_naming_the_setting(command, url, problem):
    result = commerce(*command, env=clean_environment(DATABASE_URL=url), check=False)
    assert_short_error(result, "DATABASE_URL", problem)


def test_a_database_without_tables_says_to_migrate(tmp_path):
    env = clean_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert_short_error(commerce("stores", "list", env=env, check=False), "commerce migrate")


def test_database_url_after_the_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'after.db'}"
    env = clean_environment()
    commerce("migrate", "--database-url", url, env=env)
    commerce("stores", "create", "--database-url", url, "--name", "After", env=env)
    assert "After" in commerce("stores", "list", "--database-url", url, env=env).stdout
    with running_server(tmp_path, env, "--database-url", url) as server:
        assert health_status(server.port) == SERVING


@pytest.mark.parametrize(
    ("args", "usage", "named"),
    [
        (["serve", "--bogus"], "commerce serve", "--bogus"),
        (["serve", "--workers", "many"], "commerce serve", "workers"),
        (["stores", "deactivate", "one"], "commerce stores deactivate", "store_id"),
        (["stores", "create"], "commerce stores create", "--name"),
    ],
)
def test_a_bad_argument_is_named_in_its_commands_usage(args, usage, named):
    result = commerce(*args, env=clean_environment(), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert result.stderr.startswith(f"usage: {usage} ")
    assert named in result.stderr.splitlines()[-1]


def test_serve_says_in_one_line_that_it_waits_for_its_database(tmp_path):
    env = clean_environment(DATABASE_URL=REFUSED)
    with running_server(tmp_path, env) as server:
        assert health_status(server.port) == NOT_SERVING
        log = server.output()
    waiting = [line for line in log.splitlines() if "unreachable" in line]
    assert len(waiting) == 1
    assert "database_url" in waiting[0]
    assert "NOT_SERVING" in waiting[0]
    assert f"127.0.0.1:{server.port}" in log  # the full listen address


def start_refused(env: dict[str, str], port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMERCE, "serve", "--listen-address", f"127.0.0.1:{port}", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("first", [[], ["--workers", "2"]], ids=["single", "workers"])
@pytest.mark.parametrize("second", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_a_used_address_is_refused(tmp_path: Path, first, second):
    env = migrated_sqlite_env(tmp_path, "Port")
    with running_server(tmp_path, env, *first) as server:
        wait_for(lambda: len(listeners(server.port)) == (2 if first else 1))
        before = listeners(server.port)
        result = start_refused(env, server.port, *second)
        assert result.returncode == 2
        assert_short_error(result, f"127.0.0.1:{server.port} is already in use", "listen_address")
        assert listeners(server.port) == before  # nobody joined the port


def test_a_free_port_is_taken_without_complaint(tmp_path: Path):
    env = migrated_sqlite_env(tmp_path, "Port")
    port = free_port()
    with running_server(tmp_path, env, port=port) as server:
        assert health_status(server.port) == SERVING
