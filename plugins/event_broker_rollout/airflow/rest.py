"""A small client for Airflow's REST API (``/api/v2`` with a JWT from ``/auth/token``).

What an operator does from the UI — trigger a rollout, watch it, answer an approval — done from a
terminal or a test, through the same API the UI uses.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from event_broker_rollout.rollout.controller import STAGES

API_PAGE = 100  # the API's default maximum page size
TERMINAL_RUN_STATES = {"success", "failed"}
# Airflow 3.3.2 fails a human-in-the-loop task answered within about a second of asking: the answer
# re-queues the task before the scheduler has processed the asking attempt's exit, which it then takes
# for a task finished behind its back (apache/airflow#67287; 3.3.2's scheduler forgives only a task
# back in "scheduled", not "queued"). An answer sent from here waits until the request is this old;
# the health gates' triggers hold back for the same race (triggers.MIN_DEFERRAL_SECONDS).
ANSWER_NOT_BEFORE_SECONDS = 15.0
# The XCom in which an approval task says when it last asked (an ISO time): a request asked again after
# a refused answer keeps its first created_at, and the resumed task its first start_date.
LAST_ASKED_XCOM_KEY = "last_asked_at"
# The controller and the stage DAGs it triggers: a rollout can start once all of them are parsed.
ROLLOUT_DAGS = ("event_broker_rollout", *(f"event_broker_{stage}" for stage in STAGES))


def seconds_before_answering(asked_at: datetime, now: datetime) -> float:
    """The wait left until a request is ANSWER_NOT_BEFORE_SECONDS old; never longer, whatever the clocks say."""
    age = (now - asked_at).total_seconds()
    return min(ANSWER_NOT_BEFORE_SECONDS, max(0.0, ANSWER_NOT_BEFORE_SECONDS - age))


def xcom_text(value: Any) -> str | None:
    """An XCom entry's value as the REST API returns it unchanged (a string, or a string's JSON)."""
    if not isinstance(value, str):
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


class AirflowApiError(RuntimeError):
    pass


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._timeout = timeout
        self._session = requests.Session()
        self._token: str | None = None

    def _authenticate(self) -> None:
        response = self._session.post(
            f"{self.base_url}/auth/token", json=self._credentials, timeout=self._timeout
        )
        if response.status_code not in (200, 201):
            raise AirflowApiError(f"login refused: HTTP {response.status_code}")
        self._token = response.json()["access_token"]
        self._session.headers["Authorization"] = f"Bearer {self._token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            self._authenticate()
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        response = self._session.request(method, url, timeout=self._timeout, **kwargs)
        if response.status_code == 401:  # the token expired: log in again once
            self._authenticate()
            response = self._session.request(method, url, timeout=self._timeout, **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET an ``/api/v2`` path (with or without that prefix) and its query parameters."""
        return self.request("GET", path.removeprefix("/api/v2"), params=params or None)

    def get_all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged collection."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, **params, limit=API_PAGE, offset=len(items))
            batch = page.get(key) or []
            items += batch
            if not batch or len(items) >= int(page.get("total_entries", 0)):
                return items

    # -- what the driver and the tests need -------------------------------------------------------

    def wait_until_ready(
        self,
        timeout: float,
        process: subprocess.Popen[bytes] | None = None,
        dag_ids: Sequence[str] = ROLLOUT_DAGS,
    ) -> None:
        """Until the API answers, scheduler/triggerer/dag-processor report healthy and the DAGs are parsed."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AirflowApiError(f"airflow standalone exited with {process.returncode}")
            try:
                health = self._session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
                unhealthy = [
                    name
                    for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                    if (health.get(name) or {}).get("status") != "healthy"
                ]
                if not unhealthy:
                    for dag_id in dag_ids:
                        self.request("GET", f"dags/{dag_id}")
                    return
                last = f"not healthy yet: {', '.join(unhealthy)}"
            except (requests.RequestException, ValueError, AirflowApiError) as error:
                last = str(error)[:200]
            time.sleep(2)
        raise AirflowApiError(f"Airflow not ready after {timeout:.0f} s: {last}")

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "importErrors")["import_errors"])

    def trigger(self, dag_id: str, conf: Mapping[str, Any], note: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if note:
            body["note"] = note
        return str(self.request("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.request("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=500")
        return list(data["task_instances"])

    def hitl_details(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.request("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/hitlDetails")
        return list(data.get("hitl_details", []))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any | None:
        """A task's XCom value as stored, or None when the task has not pushed that key."""
        path = (
            f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{quote(key, safe='')}"
        )
        try:
            entry = self.request("GET", path, params={"map_index": map_index})
        except AirflowApiError as error:
            if "HTTP 404" in str(error):
                return None
            raise
        return entry.get("value")

    def answer_approval(
        self, dag_id: str, run_id: str, task_id: str, option: str, map_index: int = -1
    ) -> Any:
        """Answer a human-in-the-loop request, no sooner than ANSWER_NOT_BEFORE_SECONDS after it was asked."""
        path = (
            f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/{map_index}/hitlDetails"
        )
        request = self.request("GET", path)
        # A cleared task asks again under its first created_at; the asking attempt's start_date is later.
        # A task that asks again after refusing an answer says when in its XCom.
        asked = [
            datetime.fromisoformat(request["created_at"]),
            datetime.fromisoformat(request["task_instance"]["start_date"]),
        ]
        last_asked = xcom_text(self.xcom(dag_id, run_id, task_id, LAST_ASKED_XCOM_KEY, map_index))
        if last_asked:
            asked.append(datetime.fromisoformat(last_asked))
        asked_at = max(asked)
        time.sleep(seconds_before_answering(asked_at, datetime.now(UTC)))
        return self.request("PATCH", path, json={"chosen_options": [option], "params_input": {}})

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)
