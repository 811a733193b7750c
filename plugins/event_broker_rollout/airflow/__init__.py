"""The Airflow layer: hooks, operators, sensors, triggers and task factories over the plain layers.

Its task-facing modules import ``runtime``, which installs Airflow as the plain layers' orchestrator
(connections, Variables, secret masking, task identity): DAG files, the triggerer and the tests get it by
importing them. The REST client (``rest``) imports no Airflow, so the dev tools can use it before they
point Airflow at its home.
"""
