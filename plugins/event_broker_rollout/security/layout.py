"""Which listener layout a node runs: plaintext until the security stage has moved it to TLS + SASL."""

from __future__ import annotations

from event_broker_rollout.environment import Environment, Host
from event_broker_rollout.infrastructure.desired import ListenerLayout, plaintext_layout


def layout_for_host(environment: Environment, host: Host) -> ListenerLayout:
    return plaintext_layout(environment, host)
