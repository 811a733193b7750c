"""event-broker-rollout: staged, gated, audited rollout of a healthcare event broker (Kafka + Schema Registry)."""
