"""Hostile values planted into every string of every config file are refused, naming the YAML path.

The leaves come from walking the shipped files (plus an environment that sets every optional field),
so a new field is covered as soon as a file uses it; ``test_every_config_string_has_a_strict_type``
covers fields no file sets yet. Free text may hold shell metacharacters (it reaches no shell) but never
a control character; a project path may be relative (``archive: .cache/artifacts/...``).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from event_broker_devtools.cli import main as cli_main
from event_broker_rollout import paths
from event_broker_rollout.config import environment as envmod
from event_broker_rollout.config.base import EnvironmentConfigError, PolicyConfigError
from event_broker_rollout.config.catalog import Catalog, Policies, load_catalog, load_policies
from event_broker_rollout.config.components import Components
from event_broker_rollout.config.environment import (
    Environment,
    SizingProfile,
    SizingProfiles,
    environment_file,
    load_sizing_profiles,
    model_problems,
    parse_environment,
)
from event_broker_rollout.config.policy import POLICY_FILE, CompliancePolicy, parse_policy
from event_broker_rollout.config.types import StringRule
from event_broker_rollout.config.validation import display_name, validate_environment

MARK = "EVILMARK"  # in every payload: a refusal must never quote the refused value


def _payloads(value: str) -> dict[str, str]:
    return {
        "command substitution": f"{value}$({MARK})",
        "backticks": f"{value}`{MARK}`",
        "semicolon": f"{value};{MARK}",
        "pipe": f"{value}|{MARK}",
        "and-list": f"{value}&&{MARK}",
        "newline": f"{value}\n{MARK}",
        "nul": f"{value}\x00{MARK}",
        "parent folder": f"{value}/../{MARK}",
        "bare ..": "..",
        "relative path": f"relative/{MARK}",
    }


PAYLOADS = list(_payloads(""))
CONTROL_PAYLOADS = {"newline", "nul"}
# Leaves that are free text: refuse control characters, may hold anything printable.
FREE_TEXT = (
    "description",
    "*.description",
    "hipaa_clauses.*",
    "service_principals.*",
)
# Leaves read on the Airflow side relative to the project root: a relative path is their normal form.
PROJECT_RELATIVE = (
    "distribution.archive",
    "schema_registry.archive",
    "catalog",
    "policies",
    "security.components",
    "events#.schema",
)


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "#", path)  # '#': literal to fnmatch, unlike brackets


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    generic = _generic(path)
    return any(fnmatch.fnmatchcase(generic, pattern) for pattern in patterns)


def expected_refused(path: str, payload: str) -> bool:
    if _matches(path, FREE_TEXT):
        return payload in CONTROL_PAYLOADS
    return not (_matches(path, PROJECT_RELATIVE) and payload == "relative path")


def string_leaves(raw: Any, prefix: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(YAML path, key path) of every string value in a loaded document."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            for path, keys in string_leaves(value, f"{prefix}.{key}" if prefix else str(key)):
                yield path, (key, *keys)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            for path, keys in string_leaves(value, f"{prefix}[{index}]"):
                yield path, (index, *keys)
    elif isinstance(raw, str):
        yield prefix, ()


def planted(raw: Any, keys: tuple[Any, ...], value: str) -> Any:
    copied = copy.deepcopy(raw)
    target = copied
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return copied


def _read(path: str | Path) -> Any:
    return yaml.safe_load(paths.resolve_project_path(path).read_text())


def _full_environment() -> dict[str, Any]:
    """prod with every optional string field set, so each is planted into too."""
    raw = _read(environment_file("prod"))
    raw["distribution"].update(
        archive="/srv/artifacts/confluent-8.1.0.tar.gz", java_home="/usr/lib/jvm/java-17"
    )
    raw["schema_registry"]["archive"] = ".cache/artifacts/confluent-8.1.0.tar.gz"
    raw["hosts"][0]["advertised_names"] = ["kctl-1.example.org"]
    raw["security"]["kerberos"] = {
        "service_name": "kafka",
        "realm": "EXAMPLE.ORG",
        "keytab_dir": "/etc/security/keytabs",
    }
    raw["security"]["credentials"]["path"] = "/etc/event-broker-rollout/credentials.json"
    return raw


ENVIRONMENTS: dict[str, Callable[[], Any]] = {
    "lab": lambda: _read(environment_file("lab")),
    "lab-change-controlled": lambda: _read(environment_file("lab-change-controlled")),
    "lab-mtls": lambda: _read(environment_file("lab-mtls")),
    "dev": lambda: _read(environment_file("dev")),
    "prod": lambda: _read(environment_file("prod")),
    "full": _full_environment,
}


@functools.cache
def _profiles() -> dict[str, SizingProfile]:
    return load_sizing_profiles()


def environment_refusals(raw: Any, tmp_path: Path) -> tuple[set[str], list[str]]:
    """(YAML paths the environment file is refused at, every problem line): what ``load_environment``
    does after reading the file, then, when that passes, the full validation of the file."""
    source = tmp_path / "hostile.yaml"
    try:
        parse_environment(envmod._resolve_extends(raw, source, ()), str(source), _profiles())
    except EnvironmentConfigError as error:
        return {p.path for p in error.problems}, [str(p) for p in error.problems]
    source.write_text(yaml.dump(raw, Dumper=yaml.CSafeDumper))
    validation = validate_environment(str(source))
    mine = display_name(source)
    lines = [str(problem) for problem in validation.problems]
    return {p.path for p in validation.problems if p.file == mine}, lines


def _model_refusals(model: type[BaseModel]) -> Callable[[Any, Path], tuple[set[str], list[str]]]:
    """The loaders' own check (``model_problems``) on the planted document, without a file round trip."""

    def refusals(raw: Any, _tmp_path: Path) -> tuple[set[str], list[str]]:
        _, problems = model_problems(model, raw)
        return {p.path for p in problems}, [str(p) for p in problems]

    return refusals


def _policy_refusals(raw: Any, _tmp_path: Path) -> tuple[set[str], list[str]]:
    try:
        parse_policy(raw, POLICY_FILE, *_catalog_and_policies())
    except PolicyConfigError as error:
        return {p.path for p in error.problems}, [str(p) for p in error.problems]
    return set(), []


@functools.cache
def _catalog_and_policies() -> tuple[Catalog, Policies]:
    return load_catalog(), load_policies()


DOCUMENTS: dict[str, tuple[Callable[[], Any], Callable[[Any, Path], tuple[set[str], list[str]]]]] = {
    **{f"environment {name}": (load, environment_refusals) for name, load in ENVIRONMENTS.items()},
    "catalog": (lambda: _read("config/catalog.yaml"), _model_refusals(Catalog)),
    "policies": (lambda: _read("config/policies.yaml"), _model_refusals(Policies)),
    "components": (lambda: _read("config/components.yaml"), _model_refusals(Components)),
    "compliance": (lambda: _read(POLICY_FILE), _policy_refusals),
    "sizing profiles": (lambda: _read("config/sizing_profiles.yaml"), _model_refusals(SizingProfiles)),
}


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("document", list(DOCUMENTS))
def test_a_hostile_value_in_any_string_field_is_refused_at_its_yaml_path(document, payload, tmp_path):
    load, refusals = DOCUMENTS[document]
    raw = load()
    leaves = list(string_leaves(raw))
    assert leaves
    missed, echoed, tried = [], [], 0
    for path, keys in leaves:
        original = raw
        for key in keys:
            original = original[key]
        refused_at, lines = refusals(planted(raw, keys, _payloads(original)[payload]), tmp_path)
        if expected_refused(path, payload):
            tried += 1
            if path not in refused_at:
                missed.append(f"{path} (refused at: {sorted(refused_at)})")
            echoed += [line for line in lines if MARK in line]
    assert not missed, f"{document}: {payload} accepted at " + "; ".join(missed)
    assert not echoed, f"{document}: a refusal quoted the value: {echoed}"
    if payload in CONTROL_PAYLOADS:
        assert tried == len(leaves)  # control characters are refused everywhere, free text included


def _unruled_strings(annotation: Any, where: str) -> list[str]:
    """Places in a type where a bare ``str`` (no StringRule) would accept anything."""
    if annotation is str:
        return [where]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if base is str:
            return [] if any(isinstance(item, StringRule) for item in metadata) else [where]
        return _unruled_strings(base, where)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found: list[str] = []
        for name, info in annotation.model_fields.items():
            metadata = info.metadata
            if info.annotation is str and any(isinstance(item, StringRule) for item in metadata):
                continue
            found += _unruled_strings(info.annotation, f"{annotation.__name__}.{name}")
        return found
    if origin is typing.Literal:
        return []
    if origin in (typing.Union, types.UnionType) or origin in (list, dict, tuple, set):
        return [place for arg in typing.get_args(annotation) for place in _unruled_strings(arg, where)]
    return []


@pytest.mark.parametrize(
    "model",
    [Environment, SizingProfiles, Catalog, Policies, Components, CompliancePolicy],
    ids=lambda m: m.__name__,
)
def test_every_config_string_has_a_strict_type(model):
    assert _unruled_strings(model, model.__name__) == []


# --- principal namespaces --------------------------------------------------------------------------


def _lab_with(tmp_path: Path, change: Callable[[dict[str, Any]], None], name: str = "env.yaml") -> Path:
    raw = _read(environment_file("lab"))
    change(raw)
    source = tmp_path / name
    source.write_text(yaml.safe_dump(raw))
    return source


def _components_with(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    raw = _read("config/components.yaml")
    change(raw)
    source = tmp_path / "components.yaml"
    source.write_text(yaml.safe_dump(raw))
    return source


def _lines(source: Path) -> list[str]:
    return [str(problem) for problem in validate_environment(str(source)).problems]


def test_a_component_principal_equal_to_a_host_name_is_refused_naming_both_files(tmp_path):
    source = _lab_with(tmp_path, lambda raw: raw["hosts"][0].update(name="analytics"))
    (line,) = [line for line in _lines(source) if "principal collision" in line]
    assert line.startswith("config/components.yaml:components[3].principal: ")
    assert f"{display_name(source)}:hosts[0].name" in line


def test_a_component_principal_named_like_a_host_is_refused_naming_both_files(tmp_path):
    components = _components_with(tmp_path, lambda raw: raw["components"][4].update(principal="lab1"))
    source = _lab_with(tmp_path, lambda raw: raw["security"].update(components=str(components)))
    (line,) = [line for line in _lines(source) if "principal collision" in line]
    assert line.startswith(f"{components}:components[4].principal: ")
    assert f"{display_name(source)}:hosts[0].name" in line


def test_a_component_named_like_a_node_certificate_is_refused(tmp_path):
    components = _components_with(tmp_path, lambda raw: raw["components"][0].update(principal="node-lab1"))
    source = _lab_with(tmp_path, lambda raw: raw["security"].update(components=str(components)))
    lines = [line for line in _lines(source) if line.startswith(f"{components}:components[0].principal: ")]
    assert any("reserved for node certificates" in line for line in lines)
    assert any(
        "principal collision" in line and f"{display_name(source)}:hosts[0].name" in line for line in lines
    )


@pytest.mark.parametrize(
    "change, here, there",
    [
        (
            lambda raw: raw["security"].update(admin_user="fhir-server"),
            "components[1].principal",
            "security.admin_user",
        ),
        (lambda raw: raw["security"].update(admin_user="lab2"), "security.admin_user", "hosts[1].name"),
        (lambda raw: raw["hosts"][2].update(name="admin"), "security.admin_user", "hosts[2].name"),
        (lambda raw: raw["hosts"][1].update(name="canary"), "service_principals.canary", "hosts[1].name"),
    ],
    ids=["user-like-admin", "admin-like-host", "host-like-admin", "host-like-service-principal"],
)
def test_principals_that_would_share_an_identity_are_refused(tmp_path, change, here, there):
    source = _lab_with(tmp_path, change)
    collisions = [line for line in _lines(source) if "principal collision" in line]
    assert any(here in line and there in line for line in collisions), collisions


def test_a_host_named_like_another_hosts_node_certificate_is_refused(tmp_path):
    source = _lab_with(tmp_path, lambda raw: raw["hosts"][1].update(name="node-lab1"))
    (line,) = [line for line in _lines(source) if "principal collision" in line]
    assert line.startswith(f"{display_name(source)}:hosts[1].name: ")
    assert "node certificate of host lab1" in line and f"{display_name(source)}:hosts[0].name" in line


def test_a_component_named_like_a_service_principal_is_refused(tmp_path):
    components = _components_with(tmp_path, lambda raw: raw["components"][2].update(principal="canary"))
    source = _lab_with(tmp_path, lambda raw: raw["security"].update(components=str(components)))
    collisions = [line for line in _lines(source) if "principal collision" in line]
    assert any(
        line.startswith(f"{components}:service_principals.canary: ") and "components[2].principal" in line
        for line in collisions
    ), collisions


# --- referenced material, the command and the stages ------------------------------------------------


def _provided_tls(raw: dict[str, Any], folder: Path) -> None:
    raw["security"]["tls"].update(mode="provided", material_dir=str(folder))


def test_provided_tls_material_must_be_complete_and_keys_private(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    for name in ("ca.crt", "lab1.crt", "lab1.key", "lab2.crt", "lab2.key", "lab3.crt"):
        (folder / name).write_text("x")
    (folder / "lab1.key").chmod(0o644)
    (folder / "lab2.key").chmod(0o600)
    source = _lab_with(tmp_path, lambda raw: _provided_tls(raw, folder))
    material = [line for line in _lines(source) if ":security.tls.material_dir: " in line]
    assert len(material) == 2
    assert any("lab3.key is missing" in line for line in material)
    assert any("lab1.key is readable by group or others" in line for line in material)


def test_a_credentials_file_readable_by_others_is_refused_without_quoting_it(tmp_path):
    secret = tmp_path / "credentials.json"
    secret.write_text('{"admin": "correct-horse-battery-staple"}')
    secret.chmod(0o644)
    source = _lab_with(tmp_path, lambda raw: raw["security"]["credentials"].update(path=str(secret)))
    lines = [line for line in _lines(source) if ":security.credentials.path: " in line]
    assert any("readable by group or others" in line for line in lines)
    assert any("no password for" in line and "analytics" in line for line in lines)
    assert not any("correct-horse" in line for line in lines)


@pytest.mark.parametrize("name", ["lab", "lab-change-controlled", "lab-mtls", "lab-oauth", "dev", "prod"])
def test_validate_command_accepts_the_shipped_environments(name, capsys):
    assert cli_main(["validate", "--env", name]) == 0
    assert f"{name}: valid" in capsys.readouterr().out


def test_validate_command_prints_one_line_per_problem_with_its_yaml_path(tmp_path, capsys):
    def hostile(raw: dict[str, Any]) -> None:
        raw["kafka"]["data_dirs"] = ["/var/lib/kafka/$(reboot)"]
        raw["description"] = "two\nlines"
        raw["distribution"]["version"] = "4.1.2;id"

    source = _lab_with(tmp_path, hostile)
    assert cli_main(["validate", "--env", str(source)]) == 1
    lines = capsys.readouterr().out.splitlines()
    where = display_name(source)
    assert sorted(line.split(": ", 1)[0] for line in lines) == [
        f"{where}:description",
        f"{where}:distribution.version",
        f"{where}:kafka.data_dirs[0]",
    ]
    assert any(
        line.endswith(
            "absolute path: only letters, digits and . _ + @ / - are allowed (no spaces or shell metacharacters)"
        )
        for line in lines
    )


def test_every_stage_loads_the_environment_through_the_full_validation(tmp_path):
    from event_broker_rollout.airflow import tasks as dag_support

    source = _lab_with(tmp_path, lambda raw: raw["hosts"][0].update(name="analytics"))
    with pytest.raises(EnvironmentConfigError, match=r"components\[3\]\.principal"):
        dag_support.environment_from({"environment": str(source)})
    assert dag_support.environment_from({"environment": "lab"}).name == "lab"


def test_lab_state_paths_are_checked_after_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    source = _lab_with(tmp_path, lambda raw: raw["security"]["tls"].update(material_dir="${LAB_STATE}/../ca"))
    assert any(
        line.startswith(f"{display_name(source)}:security.tls.material_dir: absolute path")
        for line in _lines(source)
    )
    monkeypatch.setenv("LAB_STATE", "/tmp/state;reboot")
    assert any(
        ":security.tls.material_dir: absolute path" in line for line in _lines(environment_file("lab"))
    )


@pytest.mark.parametrize(
    "where, value, rule",
    [
        (("kafka", "data_dirs", 0), "/" + "d" * 300, "absolute path: longer than 255"),
        (("description",), "x" * 1001, "free text: longer than 1000"),
        (("description",), "looks fine\u202etxt.exe", "control character"),
        (("distribution", "install_dir"), "opt/kafka", "absolute path: must be absolute"),
        (("distribution", "install_dir"), "/opt/kafka/", "absolute path: must be normalized"),
        (("distribution", "install_dir"), "/opt//kafka", "absolute path: must be normalized"),
        (("distribution", "install_dir"), "/opt/-rf", "absolute path: no path component may start with '-'"),
        (("distribution", "version"), "4.1", None),
        (("distribution", "version"), "7.9.0-ce", None),
        (("distribution", "version"), "4", "version: "),
        (("kafka", "service_user"), "Kafka", "unix user/group name: "),
        (("kafka", "service_user"), "cp-kafka", None),
    ],
)
def test_bounds_and_forms(tmp_path, where, value, rule):
    source = _lab_with(tmp_path, lambda raw: planted_in_place(raw, where, value))
    path = envmod.yaml_path(where)
    lines = [line for line in _lines(source) if line.startswith(f"{display_name(source)}:{path}: ")]
    if rule is None:
        assert lines == []
    else:
        assert any(rule in line for line in lines), lines


@pytest.mark.parametrize(
    "ldap, rule",
    [
        (
            {
                "url": "ldaps://ldap.example.org:636",
                "user_dn_template": "uid={username},ou=kafka,dc=example,dc=org",
            },
            None,
        ),
        (
            {
                "url": "ldap://[2001:db8::1]:389",
                "user_dn_template": "cn={username},ou=Kafka Users,dc=example",
            },
            None,
        ),
        (
            {"url": "https://ldap.example.org", "user_dn_template": "uid={username},dc=org"},
            "ldap.url: ldap url",
        ),
        (
            {"url": "ldaps://user:pw@ldap.example.org", "user_dn_template": "uid={username},dc=org"},
            "ldap.url: ldap url",
        ),
        (
            {"url": "ldaps://ldap.example.org/?x", "user_dn_template": "uid={username},dc=org"},
            "ldap.url: ldap url",
        ),
        (
            {"url": "ldaps://ldap.example.org", "user_dn_template": "uid=admin,dc=org"},
            "ldap.user_dn_template: ldap dn",
        ),
        (
            {"url": "ldaps://ldap.example.org", "user_dn_template": "uid={username},dc=o\\,rg"},
            "ldap.user_dn_template: ldap dn",
        ),
        (
            {"url": "ldaps://ldap.example.org", "user_dn_template": "uid={username};dc=org"},
            "ldap.user_dn_template: ldap dn",
        ),
    ],
)
def test_ldap_url_by_scheme_and_dn_syntax(tmp_path, ldap, rule):
    source = _lab_with(tmp_path, lambda raw: raw["security"].update(ldap=ldap))
    lines = [line for line in _lines(source) if ":security.ldap." in line]
    if rule is None:
        assert lines == []
    else:
        assert any(f"security.{rule}" in line for line in lines), lines


@pytest.mark.parametrize(
    "realm, refused", [("EXAMPLE.ORG", False), ("example.org", False), ("EXAMPLE ORG", True)]
)
def test_kerberos_realm(tmp_path, realm, refused):
    kerberos = {"realm": realm, "keytab_dir": "/etc/security/keytabs"}
    source = _lab_with(tmp_path, lambda raw: raw["security"].update(kerberos=kerberos))
    lines = [line for line in _lines(source) if ":security.kerberos.realm: kerberos realm" in line]
    assert bool(lines) is refused


def planted_in_place(raw: Any, keys: tuple[Any, ...], value: str) -> None:
    target = raw
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
