"""Where the project's folders are, with environment overrides for tests and deployments."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("EBR_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_DIR = Path(os.environ.get("EBR_CONFIG_DIR", PROJECT_ROOT / "config"))
ENVIRONMENTS_DIR = CONFIG_DIR / "environments"
INCLUDE_DIR = PROJECT_ROOT / "include"
TEMPLATES_DIR = INCLUDE_DIR / "templates"
ARTIFACTS_DIR = Path(os.environ.get("EBR_ARTIFACTS_DIR", PROJECT_ROOT / ".cache" / "artifacts"))
# The GSSAPI-capable librdkafka and the Kerberos cache plugin (native/build.sh, run by make setup).
NATIVE_DIR = Path(os.environ.get("EBR_NATIVE_DIR", PROJECT_ROOT / ".cache" / "librdkafka-gssapi"))


def reports_dir() -> Path:
    """Reports root; read at call time so a test or a deployment can redirect it."""
    return Path(os.environ.get("EBR_REPORTS_DIR", PROJECT_ROOT / "reports"))


def lab_state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE", "/var/lib/event-broker-lab"))


def resolve_project_path(value: str | Path) -> Path:
    """A path from a config file: absolute as given, relative to the project root otherwise."""
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path
