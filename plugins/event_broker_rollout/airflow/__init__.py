"""The Airflow layer: hooks, operators, sensors, triggers and task factories over the plain layers.

Importing any module of it installs Airflow as the plain layers' orchestrator (connections, Variables,
secret masking, task identity), so DAG files, the triggerer and the dev tools never run without it.
"""

from event_broker_rollout.airflow import runtime

runtime.install()
