"""The work budget's arithmetic: claims fit or are refused, a ticket releases exactly what it took."""

from __future__ import annotations

import pytest

from server.errors import InvalidRequestError, OverCapacityError
from server.work import WorkBudget


def test_claims_fill_the_budget_and_release_frees_it():
    budget = WorkBudget(1000, retry_after_s=2)
    first, second = budget.ticket(), budget.ticket()
    first.claim(600)
    with pytest.raises(OverCapacityError) as refused:
        second.claim(500)
    assert refused.value.status_code == 429 and refused.value.retry_after_s == 2
    assert budget.in_use == 600 and second.tokens == 0  # a refused claim takes nothing
    second.claim(400)
    first.release()
    first.release()  # idempotent: the middleware may release a ticket whose route already failed
    assert budget.in_use == 400
    second.release()
    assert budget.in_use == 0


def test_a_claim_larger_than_the_whole_budget_is_a_400():
    budget = WorkBudget(1000, retry_after_s=2)
    with pytest.raises(InvalidRequestError) as refused:
        budget.ticket().claim(1001)
    assert refused.value.code == "request_too_large" and "SEE_MAX_PENDING_TOKENS" in refused.value.message


def test_the_default_budget_comes_from_the_engine_and_an_operator_setting_wins():
    derived, configured = WorkBudget(None, retry_after_s=2), WorkBudget(5000, retry_after_s=2)
    derived.ticket().claim(10**9)  # nothing is sized before the engine reports: nothing to refuse yet
    for budget in (derived, configured):
        budget.size_from_engine(kv_cache_tokens=8192)
    assert derived.capacity == 2 * 8192 and configured.capacity == 5000
