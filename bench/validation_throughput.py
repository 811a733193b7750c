"""Validation throughput: the integration stage's data-quality suite over generated events.

Generates N synthetic events (default 100,000), flattens them as the consumer would, then times
``quality.assess``: the derived columns, the Great Expectations run (ephemeral context, BOOLEAN_ONLY,
no Data Docs) and the row checks that pick dead letters. Generation, flattening and the GX import are
not timed. Prints ``{"events": N, "seconds": s, "events_per_second": x}``.

    .venv/bin/python bench/validation_throughput.py [--events 100000] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import great_expectations  # noqa: F401  # imported up front: its import time is not validation time

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration import quality
from event_broker_rollout.integration.events import epoch_ms, synthetic_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    catalog = load_catalog()
    now = datetime.now(UTC)
    samples = synthetic_samples(args.events, seed=args.seed, now=now, catalog=catalog).events
    rows = [
        quality.flatten(
            s.value, s.key, 1, epoch_ms(now), epoch_ms(now), topic=s.topic, registered_schema_id=1
        )
        for s in samples
    ]
    settings = quality.SuiteSettings.for_catalog(catalog, now_ms=epoch_ms(now), expected_rows=len(rows))

    started = time.perf_counter()
    report = quality.assess(rows, settings, run_name="bench")
    seconds = time.perf_counter() - started
    if not report.success:  # a benchmark of a failing suite would measure something else
        raise SystemExit(f"suite failed: {[outcome.id for outcome in report.failed]}")
    print(
        json.dumps(
            {
                "events": len(rows),
                "seconds": round(seconds, 3),
                "events_per_second": round(len(rows) / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
