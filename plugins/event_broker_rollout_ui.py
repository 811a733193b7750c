"""Airflow loads plugins from this folder's top-level files; the project's plugin lives in its package."""

from event_broker_rollout.airflow.web import EventBrokerRolloutPlugin

__all__ = ["EventBrokerRolloutPlugin"]
