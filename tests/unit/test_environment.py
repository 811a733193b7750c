from __future__ import annotations

import copy
import os

import pytest
import yaml

from event_broker_rollout.config import environment as envmod
from event_broker_rollout.config.base import EnvironmentConfigError
from event_broker_rollout.config.environment import parse_environment


@pytest.fixture(scope="module")
def profiles():
    return envmod.load_sizing_profiles()


@pytest.fixture
def lab_raw():
    return yaml.safe_load(envmod.environment_file("lab").read_text())


@pytest.mark.parametrize("name", ["lab", "lab-change-controlled", "lab-mtls", "lab-oauth", "dev", "prod"])
def test_shipped_environments_are_valid(name):
    environment = envmod.load_environment(name)
    assert environment.name == name
    assert len(environment.controllers) % 2 == 1


def test_lab_environment_matches_the_lab_layout():
    lab = envmod.load_environment("lab")
    assert [str(h.address) for h in lab.hosts] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert lab.bootstrap_servers() == "10.77.0.11:9092,10.77.0.12:9092,10.77.0.13:9092"
    assert [lab.node_id(h) for h in lab.hosts] == [1, 2, 3]
    assert [h.name for h in lab.registries] == ["lab1"]


def test_prod_requires_approval_and_dev_does_not():
    assert envmod.load_environment("prod").requires_approval
    assert not envmod.load_environment("dev").requires_approval


def test_broken_file_reports_every_mistake_with_its_yaml_path(lab_raw, profiles):
    broken = copy.deepcopy(lab_raw)
    broken["hosts"][1]["rolez"] = ["broker"]  # typo
    broken["hosts"][2]["name"] = "lab1"  # duplicate name
    broken["hosts"][2]["address"] = "10.77.0.11"  # duplicate address
    broken["hosts"].append(
        {"name": "lab4", "address": "10.77.0.14", "ssh_conn_id": "ssh_lab4", "roles": ["controller"]}
    )  # 4 controllers
    broken["kafka"]["default_replication_factor"] = 5  # above 3 brokers
    broken["kafka"]["min_insync_replicas"] = 5  # not below RF
    broken["kafka"]["listeners"]["controller_port"] = 9092  # clashes with the client port
    broken["sizing_profile"] = "huge"
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(broken, "broken.yaml", profiles)
    paths = {problem.path for problem in caught.value.problems}
    assert {
        "hosts[1].rolez",
        "hosts[2].name",
        "hosts[2].address",
        "hosts",
        "kafka.default_replication_factor",
        "kafka.min_insync_replicas",
        "hosts[0].roles",
        "sizing_profile",
    } <= paths
    message = str(caught.value)
    assert message.startswith("broken.yaml: ")
    assert "hosts[1].rolez: unknown key" in message
    assert "4 KRaft controllers" in message


def test_a_role_with_no_host_is_refused(lab_raw, profiles):
    for host in lab_raw["hosts"]:
        host["roles"] = [r for r in host["roles"] if r != "schema_registry"]
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    assert any("no host has the role schema_registry" in p.message for p in caught.value.problems)


def test_structural_and_semantic_problems_are_reported_together(lab_raw, profiles):
    lab_raw["hosts"][0]["address"] = "not-an-ip"
    lab_raw["kafka"]["min_insync_replicas"] = 3
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    paths = {p.path for p in caught.value.problems}
    assert "hosts[0].address" in paths
    assert "kafka.min_insync_replicas" in paths


def test_zookeeper_mode_only_with_confluent_7(lab_raw, profiles):
    lab_raw["kafka"]["mode"] = "zookeeper"
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    assert [p.path for p in caught.value.problems] == ["kafka.mode"]
    assert "Kafka 4.x is KRaft only" in str(caught.value)


def test_zookeeper_mode_is_not_deployable_yet(lab_raw, profiles):
    """Nothing deploys ZooKeeper today: refused with that reason, even where it would be legal."""
    lab_raw["kafka"]["mode"] = "zookeeper"
    lab_raw["distribution"] = {"flavor": "confluent", "version": "7.9.1", "package_repository": "confluent-7"}
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    assert "kafka.mode: zookeeper is not deployable yet" in str(caught.value)


def test_pkcs12_keystores_are_refused_until_built(lab_raw, profiles):
    lab_raw["security"]["tls"]["keystore_type"] = "PKCS12"
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    assert [p.path for p in caught.value.problems] == ["security.tls.keystore_type"]
    assert "use PEM" in str(caught.value)


def test_host_outside_the_declared_subnet(lab_raw, profiles):
    lab_raw["hosts"][2]["address"] = "10.78.0.13"
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment(lab_raw, "x.yaml", profiles)
    assert [p.path for p in caught.value.problems] == ["hosts[2].address"]


def test_unknown_environment_names_the_known_ones():
    with pytest.raises(
        EnvironmentConfigError,
        match="known: dev, lab, lab-change-controlled, lab-kerberos, lab-mtls, lab-oauth, prod",
    ):
        envmod.load_environment("nope")


def test_yaml_path_rendering():
    assert envmod.yaml_path(("hosts", 1, "roles", 0)) == "hosts[1].roles[0]"
    assert envmod.yaml_path(("kafka", "listeners", "client_port")) == "kafka.listeners.client_port"


def test_a_variant_extends_its_base_and_overrides_only_what_it_says():
    base, variant = envmod.load_environment("lab"), envmod.load_environment("lab-change-controlled")
    assert variant.requires_approval and not base.requires_approval
    assert variant.hosts == base.hosts
    assert variant.security == base.security
    assert variant.kafka == base.kafka


def test_mappings_merge_and_lists_are_replaced():
    merged = envmod._merged(
        {"kafka": {"mode": "kraft", "min_insync_replicas": 2}, "hosts": [1, 2, 3]},
        {"kafka": {"min_insync_replicas": 3}, "hosts": [4]},
    )
    assert merged == {"kafka": {"mode": "kraft", "min_insync_replicas": 3}, "hosts": [4]}


def test_extends_cycles_and_unknown_bases_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(envmod.paths, "ENVIRONMENTS_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text("extends: b\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a\nname: b\n")
    (tmp_path / "c.yaml").write_text("extends: nowhere\nname: c\n")
    with pytest.raises(EnvironmentConfigError, match="extends: must name another environment"):
        envmod.load_environment("a")
    with pytest.raises(EnvironmentConfigError, match="no such environment file"):
        envmod.load_environment("c")


def test_approvers_need_change_control_and_at_least_one_user_or_role(lab_raw, profiles):
    with pytest.raises(EnvironmentConfigError) as caught:
        parse_environment({**lab_raw, "approvers": {"users": ["approver1"]}}, "x.yaml", profiles)
    assert "approvers: approvers decide only with requires_approval: true" in str(caught.value)
    gated = {**lab_raw, "requires_approval": True}
    with pytest.raises(EnvironmentConfigError, match="name at least one user or role"):
        parse_environment({**gated, "approvers": {"users": [], "roles": []}}, "x.yaml", profiles)
    with pytest.raises(EnvironmentConfigError, match=r"approvers\.users\[0\]: .*identifier"):
        parse_environment({**gated, "approvers": {"users": ["ad min"]}}, "x.yaml", profiles)
    environment = parse_environment({**gated, "approvers": {"roles": ["admin"]}}, "x.yaml", profiles)
    assert environment.approvers is not None and environment.approvers.roles == ["admin"]


def test_each_config_file_kind_fails_with_an_error_named_for_it(tmp_path):
    from event_broker_rollout.config import base
    from event_broker_rollout.config.catalog import load_catalog, load_policies
    from event_broker_rollout.config.components import load_components
    from event_broker_rollout.config.environment import load_environment
    from event_broker_rollout.config.policy import load_policy

    unknown_key = tmp_path / "typo.yaml"
    unknown_key.write_text("surprise: 1\n")
    loaders = {
        base.EnvironmentConfigError: lambda: load_environment(str(unknown_key)),
        base.CatalogConfigError: lambda: load_catalog(unknown_key),
        base.ComponentsConfigError: lambda: load_components(unknown_key),
        base.PolicyConfigError: lambda: load_policy(load_catalog(), load_policies(), unknown_key),
    }
    for error_type, load in loaders.items():
        with pytest.raises(error_type) as caught:
            load()
        assert isinstance(caught.value, base.ConfigError)
        assert str(unknown_key) in str(caught.value), error_type.__name__


def test_sizing_profiles_are_read_again_when_their_file_changes(tmp_path):
    source = tmp_path / "sizing_profiles.yaml"
    shipped = yaml.safe_load((envmod.paths.CONFIG_DIR / "sizing_profiles.yaml").read_text())
    source.write_text(yaml.safe_dump(shipped))
    assert envmod.load_sizing_profiles(source) == envmod.load_sizing_profiles(source)

    renamed = {"profiles": {"renamed": next(iter(shipped["profiles"].values()))}}
    source.write_text(yaml.safe_dump(renamed))
    later = source.stat().st_mtime_ns + 1_000_000_000  # a later version, however coarse the clock
    os.utime(source, ns=(later, later))
    assert list(envmod.load_sizing_profiles(source)) == ["renamed"]
