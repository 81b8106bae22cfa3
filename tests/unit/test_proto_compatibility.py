"""scripts/check-breaking, the CI gate on the protos, in a throwaway git repository
holding a copy of ours: compatible changes pass, a breaking one fails CI even when
later commits do not touch the protos, and a new package version is the way out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.process import ROOT

CUSTOMER_SERVICE = Path("protos/commerce/customers/v1/customer_service.proto")
PHONE = "  string phone = 6 [(google.api.field_behavior) = OPTIONAL];\n"


def run(repo: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    result = run(repo, "git", "commit", "-q", "-m", message)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with our buf.yaml, protos/ and the gate, one commit deep."""
    if not (ROOT / "node_modules" / ".bin" / "buf").exists():
        pytest.fail("buf is missing: run scripts/setup-node")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", repo / "protos")
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    (repo / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "check-breaking", repo / "scripts")
    # buf follows no symbolic link into a module: the google.api protos are copied.
    (repo / "node_modules").mkdir()
    for tool in (".bin", "@bufbuild"):
        (repo / "node_modules" / tool).symlink_to(ROOT / "node_modules" / tool)
    google_api = Path("node_modules/google-proto-files/google/api")
    shutil.copytree(ROOT / google_api, repo / google_api)
    (repo / ".gitignore").write_text("node_modules\n")
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "ci@example.com")
    run(repo, "git", "config", "user.name", "CI")
    commit(repo, "protos as released")
    return repo


def edit(repo: Path, path: Path, old: str, new: str) -> None:
    text = (repo / path).read_text()
    assert old in text
    (repo / path).write_text(text.replace(old, new, 1))


def check_breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    return run(repo, "scripts/check-breaking")


def test_an_added_field_is_compatible(repo):
    edit(
        repo,
        CUSTOMER_SERVICE,
        "message CreateCustomerRequest {\n",
        "message CreateCustomerRequest {\n  // A new, optional field.\n  string referrer = 11;\n",
    )
    commit(repo, "add a field")
    result = check_breaking(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "protos are compatible with" in result.stdout


def test_a_deleted_field_fails_even_after_later_commits(repo):
    edit(repo, CUSTOMER_SERVICE, PHONE, "  reserved 6;\n")
    commit(repo, "drop CreateCustomerRequest.phone")
    (repo / "NOTES.md").write_text("a commit that does not touch the protos\n")
    commit(repo, "unrelated")
    result = check_breaking(repo)
    assert result.returncode != 0
    assert 'field "6" with name "phone" on message "CreateCustomerRequest" was deleted' in (
        result.stdout + result.stderr
    )


def test_a_renumbered_field_fails(repo):
    edit(repo, CUSTOMER_SERVICE, PHONE, PHONE.replace("= 6 ", "= 60 "))
    result = check_breaking(repo)  # the working tree against the last commit
    assert result.returncode != 0
    assert "phone" in result.stdout + result.stderr


def test_the_incompatible_shape_ships_as_a_new_package_version(repo):
    v1 = repo / "protos" / "commerce" / "customers" / "v1"
    v2 = repo / "protos" / "commerce" / "customers" / "v2"
    shutil.copytree(v1, v2)
    for proto in v2.glob("*.proto"):
        text = proto.read_text().replace("commerce.customers.v1", "commerce.customers.v2")
        proto.write_text(text.replace("commerce/customers/v1/", "commerce/customers/v2/"))
    edit(
        repo,
        CUSTOMER_SERVICE.parent.parent / "v2" / CUSTOMER_SERVICE.name,
        PHONE,
        "  reserved 6;\n",
    )
    commit(repo, "commerce.customers.v2 without CreateCustomerRequest.phone")
    result = check_breaking(repo)
    assert result.returncode == 0, result.stdout + result.stderr
