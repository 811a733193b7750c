"""The project's Airflow 3 plugin: a "Rollouts" page in the UI's navigation, the reports behind Airflow's
own authentication and authorization, and a "Report" link on every task of the project's DAGs.

A FastAPI app mounted in the api-server under ``/event-broker``. Every request needs a valid Airflow
session (the UI's cookie) or token (``Authorization: Bearer``), else 401/403; a report is served only to
a user who may read its DAG. The page and the file checks are plain Python (``rollouts_page``).
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from event_broker_rollout.evidence import rollouts_page
from event_broker_rollout.evidence.rollouts_page import RunInfo

RECENT_RUNS = 200
_bearer = HTTPBearer(auto_error=False)


async def current_user(
    request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    """Airflow's own authentication: the bearer token, else the UI's session cookie (401/403 otherwise)."""
    # Imported here: the api-server's security module pulls in the whole API; task processes that load
    # plugins for the extra link never need it.
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, bearer)


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _may_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return bool(_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))


def _recent_runs(dag_ids: set[str]) -> list[RunInfo]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if not dag_ids:
        return []
    with create_session() as session:
        runs = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id.in_(sorted(dag_ids)))
            .order_by(DagRun.run_after.desc())
            .limit(RECENT_RUNS)
        ).all()
        return [
            RunInfo(
                dag_id=run.dag_id,
                run_id=run.run_id,
                state=str(run.state),
                started_at=run.start_date.isoformat(timespec="seconds") if run.start_date else None,
                triggered_by=run.triggering_user_name,
                environment=str((run.conf or {}).get("environment") or "") or None,
            )
            for run in runs
        ]


User = Annotated[Any, Depends(current_user)]

app = FastAPI(title="Event broker rollouts", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/", response_class=HTMLResponse)
def rollouts(user: User) -> HTMLResponse:
    readable = {
        dag_id
        for dag_id in _auth_manager().get_authorized_dag_ids(user=user, method="GET")
        if rollouts_page.is_project_dag(dag_id)
    }
    rows = [rollouts_page.row_for(run) for run in _recent_runs(readable)]
    return HTMLResponse(rollouts_page.render_page(rows, str(user.get_name())))


@app.get("/reports/{dag_id}/{run_id}/{name:path}")
def report(dag_id: str, run_id: str, name: str, user: User) -> FileResponse:
    if not rollouts_page.is_project_dag(dag_id) or not _may_read(user, dag_id):
        raise HTTPException(status_code=403, detail="not allowed to read this DAG's reports")
    path = rollouts_page.report_file(dag_id, run_id, name)
    if path is None:
        raise HTTPException(status_code=404, detail="no such report file")
    return FileResponse(path, media_type=rollouts_page.SERVABLE_SUFFIXES[path.suffix])


class ReportLink(BaseOperatorLink):
    """ "Report" on every task of the project's DAGs: the run's report (stage, rollout or compliance)."""

    name = "Report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not rollouts_page.is_project_dag(ti_key.dag_id):
            return ""
        return rollouts_page.report_url(ti_key.dag_id, ti_key.run_id)


class EventBrokerRolloutPlugin(AirflowPlugin):
    name = "event_broker_rollout"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads these class attributes)
        {"app": app, "url_prefix": rollouts_page.URL_PREFIX, "name": "Event broker rollouts"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Rollouts",
            "href": f"{rollouts_page.URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "rollouts",
        }
    ]
    global_operator_extra_links = [ReportLink()]  # noqa: RUF012
