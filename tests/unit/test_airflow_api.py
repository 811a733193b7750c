from datetime import UTC, datetime, timedelta

import pytest

from event_broker_rollout.airflow.rest import ANSWER_NOT_BEFORE_SECONDS, seconds_before_answering, xcom_text

ASKED = datetime(2026, 11, 27, 23, 12, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age_seconds", "expected_wait"),
    [
        (0.3, ANSWER_NOT_BEFORE_SECONDS - 0.3),  # answered at once: waits out the rest
        (ANSWER_NOT_BEFORE_SECONDS, 0.0),
        (3600.0, 0.0),  # an approver who read the plan for an hour does not wait
        (-30.0, ANSWER_NOT_BEFORE_SECONDS),  # the server's clock runs ahead: the full wait, no more
    ],
)
def test_an_answer_waits_until_the_request_is_old_enough(age_seconds, expected_wait):
    now = ASKED + timedelta(seconds=age_seconds)

    assert seconds_before_answering(ASKED, now) == pytest.approx(expected_wait)


@pytest.mark.parametrize(
    ("stored", "text"),
    [
        ("2026-12-03T08:00:00+00:00", "2026-12-03T08:00:00+00:00"),
        ('"2026-12-03T08:00:00"', "2026-12-03T08:00:00"),
    ],
)
def test_an_xcom_time_reads_whether_stored_as_text_or_as_json(stored, text):
    assert xcom_text(stored) == text
    assert xcom_text(None) is None and xcom_text(17) is None
