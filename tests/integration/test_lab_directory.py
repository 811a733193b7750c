"""The lab's directory (slapd) and its federation by the identity provider (Keycloak), on the real lab:
no mocks. The directory answers LDAPS on the identity host's address only, lets anonymous clients do
nothing, checks people's passwords and shows the provider people and groups but never a password hash;
a person logs in at the provider with the directory's password and her token names her uid as the
Kafka principal and carries the registry role her groups give. A second ``up`` restarts nothing.

The lab's hosts and the provider are only brought up (idempotent), never taken down here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from event_broker_devtools import lab_directory, lab_identity_host, lab_idp
from event_broker_rollout.cluster import oidc
from event_broker_rollout.hosts.secret_files import write_secret
from tests.conftest import REPO, needs_root

pytestmark = [pytest.mark.integration, pytest.mark.lab, needs_root()]


def devtool(module: str, *arguments: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", f"event_broker_devtools.{module}", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    subprocess.run(
        ["bash", str(REPO / "lab" / "lab.sh"), "up", "3"], check=True, capture_output=True, timeout=180
    )
    devtool("lab_idp", "up")
    return json.loads(lab_directory.passwords_file().read_text())


def search(
    bind_dn: str | None, password_file: Path | None, base: str, *attributes: str
) -> subprocess.CompletedProcess:
    credentials = ["-D", bind_dn, "-y", str(password_file)] if bind_dn and password_file else []
    return subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", lab_directory.URL, *credentials, "-b", base, *attributes],
        capture_output=True,
        text=True,
        env={**os.environ, "LDAPTLS_CACERT": str(lab_identity_host.state_dir() / "ca.crt")},
        timeout=30,
        check=False,
    )


def test_the_directory_listens_on_the_identity_hosts_address_only(passwords):
    listening = subprocess.run(
        ["ip", "netns", "exec", lab_identity_host.NETNS, "ss", "-Htln", "sport", "= :636"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "10.77.0.2:636" in listening and "0.0.0.0:636" not in listening and "*:636" not in listening
    plain = subprocess.run(
        ["ldapwhoami", "-x", "-H", "ldap://10.77.0.2:389"], capture_output=True, text=True, check=False
    )
    assert plain.returncode != 0  # no plain LDAP at all


def test_anonymous_clients_see_nothing_and_people_bind_with_their_own_password(passwords):
    anonymous = search(None, None, lab_directory.BASE_DN, "uid")
    assert anonymous.returncode != 0 and "anonymous bind disallowed" in anonymous.stderr
    assert lab_directory.bind_as_person("li.wei", passwords["li.wei"]).returncode == 0
    wrong = lab_directory.bind_as_person("li.wei", passwords["amara.okafor"])
    assert wrong.returncode == 49, wrong.stderr  # invalid credentials


def test_the_provider_reads_people_and_groups_but_no_password_hash(passwords, tmp_path):
    reader_password = tmp_path / "reader.password"
    write_secret(reader_password, passwords[lab_directory.READER])
    reader = (lab_directory.READER_DN, reader_password)
    people = search(*reader, lab_directory.PEOPLE_DN, "uid", "userPassword")
    assert people.returncode == 0, people.stderr
    assert {
        line.removeprefix("uid: ") for line in people.stdout.splitlines() if line.startswith("uid: ")
    } == {person.uid for person in lab_directory.PEOPLE}
    assert "userPassword" not in people.stdout
    groups = search(*reader, lab_directory.GROUPS_DN, "member")
    assert "member: uid=amara.okafor,ou=people,dc=ebr,dc=lab" in groups.stdout
    # a person reads her own entry, not her colleagues'
    own_password = tmp_path / "li.wei.password"
    write_secret(own_password, passwords["li.wei"])
    li_wei = f"uid=li.wei,{lab_directory.PEOPLE_DN}"
    assert search(li_wei, own_password, li_wei, "uid").returncode == 0
    colleague = search(li_wei, own_password, f"uid=amara.okafor,{lab_directory.PEOPLE_DN}", "uid")
    assert colleague.returncode == 32, colleague  # no such object, as far as she can tell


def test_a_person_logs_in_at_the_provider_as_her_uid_with_her_groups_roles(passwords):
    expected = {"amara.okafor": "sr-admin", "li.wei": "sr-readonly"}
    for uid, role in expected.items():
        claims = oidc.unverified_claims(lab_idp.person_token(uid, passwords[uid]))
        assert claims["kafka_principal"] == uid and claims["azp"] == lab_idp.PEOPLE_CLIENT
        assert {"kafka", "registry-api"} <= set(oidc.audiences(claims))
        assert role in claims["realm_access"]["roles"]
    outsider = oidc.unverified_claims(lab_idp.person_token("sam.ortiz", passwords["sam.ortiz"]))
    assert not {"sr-admin", "sr-developer", "sr-readonly"} & set(outsider["realm_access"]["roles"])
    with pytest.raises(lab_idp.PasswordRefused, match="HTTP 401"):
        lab_idp.person_token("li.wei", passwords["amara.okafor"])
    with pytest.raises(lab_idp.PasswordRefused, match="HTTP 401"):
        lab_idp.person_token("nobody", passwords["li.wei"])


def test_a_second_up_restarts_nothing(passwords):
    before = (lab_directory.running_pid(), lab_idp.running_pid())
    assert None not in before
    devtool("lab_idp", "up")
    assert (lab_directory.running_pid(), lab_idp.running_pid()) == before
