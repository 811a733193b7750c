"""The lab KDC's pure parts: its profile and the clients' krb5.conf (the realm, one listening address,
nothing from DNS), which environments it serves, and the keytabs it hands out for lab-kerberos."""

from __future__ import annotations

from pathlib import Path

import pytest

from event_broker_devtools import lab_kdc
from event_broker_rollout.config.components import CANARY_PRINCIPAL, PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import available_environments, load_environment


def settings(text: str) -> dict[str, str]:
    return dict(
        line.strip().split(" = ", 1) for line in text.splitlines() if " = " in line and "{" not in line
    )


def test_the_kdc_listens_on_the_labs_address_only_and_keeps_its_state_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    text = lab_kdc.render_kdc_conf(["EBR.LAB"], lab_kdc.state_dir(), "10.77.0.2", 88)
    values = settings(text)
    assert values["kdc_listen"] == values["kdc_tcp_listen"] == "10.77.0.2:88"
    assert values["database_name"] == f"{tmp_path}/kdc/EBR.LAB/principal"
    assert values["key_stash_file"] == f"{tmp_path}/kdc/EBR.LAB/stash"
    assert values["kdc"] == values["default"] == f"FILE:{tmp_path}/kdc/kdc.log"
    assert values["default_principal_flags"] == "+preauth"
    assert "acl_file" not in text and "kadmind" not in text and "/etc/" not in text
    lab_kdc.state_dir().mkdir()
    lab_kdc.kdc_conf().write_text(text)
    assert lab_kdc.served_realms() == ["EBR.LAB"]


def test_the_clients_krb5_conf_names_the_kdc_by_address_and_asks_dns_nothing():
    text = lab_kdc.render_krb5_conf(["EBR.LAB"], "10.77.0.2", 88)
    values = settings(text)
    assert values["default_realm"] == "EBR.LAB"
    assert values["kdc"] == "10.77.0.2:88"
    for name in ("dns_lookup_kdc", "dns_lookup_realm", "dns_canonicalize_hostname", "rdns"):
        assert values[name] == "false", name
    assert values["udp_preference_limit"] == "1"
    assert values["ticket_lifetime"] == "1h"
    assert "EBR.LAB = {" in text and "admin_server" not in text


def test_it_serves_the_environments_whose_clients_use_kerberos_at_the_labs_kdc():
    served = lab_kdc.served_environments(available_environments())
    assert [environment.name for environment in served] == ["lab-kerberos"]
    assert lab_kdc.realms_of(served) == ["EBR.LAB"]
    assert lab_kdc.kdc_port(served) == 88


def test_the_keytabs_of_lab_kerberos(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    environment = load_environment("lab-kerberos")
    folder = tmp_path / "kerberos" / "lab-kerberos"
    keytabs = {keytab.principal: keytab for keytab in lab_kdc.keytabs(environment)}
    brokers = {
        f"kafka/10.77.0.{20 + n}@EBR.LAB": folder / "brokers" / f"lab{10 + n}.keytab" for n in range(3)
    }
    clients = ["admin", *components_of(environment).principals()]
    assert {CANARY_PRINCIPAL, PROBE_PRINCIPAL} <= set(clients)
    assert len(clients) == 1 + 7 + 2  # the admin, seven components, the canary and the no-grants probe
    expected = {
        **brokers,
        **{f"{principal}@EBR.LAB": folder / "clients" / f"{principal}.keytab" for principal in clients},
        "ebr-stale@EBR.LAB": folder / "clients" / "ebr-stale.keytab",
    }
    assert {principal: keytab.path for principal, keytab in keytabs.items()} == expected
    assert [principal for principal, keytab in keytabs.items() if keytab.stale] == ["ebr-stale@EBR.LAB"]
    planned = {keytab.principal: keytab.path for keytab in lab_kdc.planned_keytabs([environment])}
    assert planned == {**expected, "ebr-kdc-check@EBR.LAB": tmp_path / "kdc" / "EBR.LAB" / "check.keytab"}


def test_a_principal_never_gets_two_keytabs(tmp_path, monkeypatch):
    """Exporting a principal's keytab again re-randomizes its key, so the first file would be stale."""
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    environment = load_environment("lab-kerberos")
    security, kerberos = environment.security, lab_kdc.kerberos_of(environment)
    assert security is not None and kerberos is not None
    elsewhere = environment.model_copy(
        update={
            "name": "lab-kerberos-elsewhere",
            "security": security.model_copy(
                update={"kerberos": kerberos.model_copy(update={"keytab_dir": str(tmp_path / "other")})}
            ),
        }
    )
    with pytest.raises(RuntimeError, match="more than one keytab file each") as refused:
        lab_kdc.planned_keytabs([environment, elsewhere])
    for principal in ("admin@EBR.LAB", "kafka/10.77.0.20@EBR.LAB", "ebr-stale@EBR.LAB"):
        assert principal in str(refused.value)
    assert Path(kerberos.keytab_dir) == tmp_path / "kerberos" / "lab-kerberos"
