"""``outcome_of``: the operator's state of a bulk change from its status, counts and held flag."""

import pytest

from bulkchange_pipeline.domain import Outcome, outcome_of


@pytest.mark.parametrize(
    ("status", "counts", "held", "expected"),
    [
        ("PROCESSED", {"PROCESSED": 5}, False, Outcome.DONE),
        ("PROCESSED", {"PROCESSED": 5, "API_FAILED": 1}, False, Outcome.DONE_WITH_FAILURES),
        ("PROCESSED", {"PROCESSED": 5, "ERROR": 1}, False, Outcome.DONE_WITH_FAILURES),  # refused at validation
        ("ERROR", {"ERROR": 3}, False, Outcome.DONE_WITH_FAILURES),  # nothing could be sent
        ("ERROR", {"PROCESSED": 1, "NEW": 2}, False, Outcome.UNFINISHED),  # a run stopped half-way
        ("PENDING", {"PROCESSED": 1, "PROCESSING": 2}, False, Outcome.WAITING_ON_CARRIER),
        ("SCHEDULED", {"SCHEDULED": 2}, False, Outcome.SCHEDULED),
        ("SCHEDULED", {"SCHEDULED": 2}, True, Outcome.HELD),
        ("NEW", {"NEW": 2}, True, Outcome.HELD),
        ("NEW", {"NEW": 2}, False, Outcome.IN_PROGRESS),
        ("PROCESSING", {"NEW": 1, "PROCESSED": 1}, False, Outcome.IN_PROGRESS),
        ("CANCELLED", {"CANCELLED": 2, "PROCESSED": 1}, False, Outcome.CANCELLED),
        ("CANCELLED", {"CANCELLED": 2}, True, Outcome.CANCELLED),  # a cancelled held one is cancelled
    ],
)
def test_outcome_of(status, counts, held, expected) -> None:
    assert outcome_of(status, counts, held=held) is expected


def test_only_done_outcomes_are_finished() -> None:
    """Cancelled, waiting, held and unfinished ones keep the ``settled`` check yellow."""
    assert {o for o in Outcome if o.finished} == {Outcome.DONE, Outcome.DONE_WITH_FAILURES}
