"""On CI a test that needs the real parts fails when it would skip: a green run proves they ran."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO

PROBE = """
import pytest

pytestmark = pytest.mark.lab


def test_needs_the_lab():
    pytest.skip("the lab is not up")
"""


@pytest.fixture
def lab_probe():
    path = REPO / "tests" / "integration" / f"probe_{uuid.uuid4().hex}.py"
    path.write_text(PROBE)
    try:
        yield path
    finally:
        path.unlink()


def run_probe(path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "EBR_REQUIRE_LAB")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_developer_without_the_lab_sees_a_skip(lab_probe):
    proc = run_probe(lab_probe)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout


@pytest.mark.parametrize("switch", [{"EBR_REQUIRE_LAB": "1"}, {"CI": "true"}])
def test_on_ci_a_skipped_lab_test_fails(lab_probe, switch):
    proc = run_probe(lab_probe, **switch)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout
    assert "the lab is not up" in proc.stdout
