"""Expected mistakes on the command line get one line naming them and what is allowed, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from event_broker_devtools import cli
from tests.conftest import REPO


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.cli", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        (["--env", "nope"], ["unknown environment 'nope'", "known: dev, lab"]),
        (["--env", "lab", "--conf", "{bad"], ["CONF is not JSON", "dry_run"]),
        (["--env", "lab", "--conf", "[1]"], ["CONF must be a JSON object"]),
        (["--env", "lab", "--conf", '{"environment": "nope"}'], ["unknown environment 'nope'"]),
    ],
)
def test_a_mistake_before_airflow_is_one_line(arguments, names):
    proc = run_cli("stage", "--stage", "preflight", *arguments)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_an_unknown_stage_names_the_stages():
    proc = run_cli("stage", "--stage", "nope")
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert "preflight" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_params_name_the_allowed_ones():
    with pytest.raises(
        cli.CommandLineError, match=r"unknown params bogus, extra .*allowed: dry_run, environment"
    ):
        cli.check_params(
            "event_broker_x", {"bogus": 1, "extra": 2, "environment": "lab"}, ["environment", "dry_run"]
        )
    cli.check_params("event_broker_x", {"environment": "lab"}, ["environment", "dry_run"])


def test_a_conf_keeps_its_own_environment():
    assert cli.parse_conf("") == {}
    assert cli.parse_conf(' {"dry_run": true} ') == {"dry_run": True}


def test_a_param_value_airflow_refuses_is_one_line():
    """Airflow's ParamValidationError (a 30-line traceback before) becomes its first line."""
    proc = run_cli("stage", "--stage", "preflight", "--conf", '{"sizing_profile": "zz"}')
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: invalid params for event_broker_preflight: Invalid input for param sizing_profile: "
        "'zz' is not one of [None, 'development', 'lab', 'production']"
    ]
