"""deciders/retry_policy: what follows attempt N of kind K (pure)."""

from __future__ import annotations

import pytest

from calstream.daemon.deciders.retry_policy import (
    AttemptCount,
    Backoff,
    after_run,
    jittered,
    split_kind,
)

BACKOFF = Backoff(first=2.0)


def step(kind, attempts, jitter=0.5):
    return after_run(kind, attempts, max_attempts=3, backoff=BACKOFF, park_recheck=30.0,
                     jitter=jitter)


def test_success_and_skipped():
    assert step("success", 1).action == "publish"
    assert step("skipped", 2).action == "publish_skipped"


def test_transient_retries_then_dead_letters():
    assert [step("transient", n).action for n in (1, 2, 3)] == ["retry", "retry", "dead_letter"]
    assert step("transient", 2).delay == 4.0
    assert step("transient", 3).category == "retries_exhausted"


def test_permanent_dead_letters_at_once():
    s = step("permanent", 1)
    assert (s.action, s.category) == ("dead_letter", "permanent_failure")


def test_infrastructure_retries_then_parks_never_dead_letters():
    actions = [step("infrastructure:disk_full", n).action for n in range(1, 50)]
    assert actions[:2] == ["retry", "retry"]
    assert set(actions[2:]) == {"park"}
    parked = step("infrastructure:disk_full", 1000)
    assert (parked.cause, parked.delay) == ("disk_full", 30.0)
    assert step("infrastructure:crds_unreachable", 1).cause == "crds_unreachable"
    assert step("infrastructure", 5).cause == "unknown"


def test_a_fault_others_of_its_kind_are_parked_on_parks_at_once():
    def alike(kind, attempts):
        return after_run(kind, attempts, max_attempts=3, backoff=BACKOFF, park_recheck=30.0,
                         parked_alike=True)
    first = alike("infrastructure:crds_reference_missing", 1)
    assert (first.action, first.cause, first.delay) == ("park", "crds_reference_missing", 30.0)
    # Only infrastructure faults: the others' steps do not depend on what is parked.
    assert alike("transient", 1).action == "retry"
    assert alike("permanent", 1).action == "dead_letter"
    assert alike("success", 1).action == "publish"


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.999])
def test_infrastructure_delays_are_jittered_within_a_quarter(jitter):
    retry = step("infrastructure:crds_lookup", 1, jitter)
    park = step("infrastructure:crds_lookup", 3, jitter)
    assert 1.5 <= retry.delay <= 2.5
    assert 22.5 <= park.delay <= 37.5


def test_jitter_spreads_and_centre_is_exact():
    assert jittered(10.0, 0.5) == 10.0
    assert jittered(10.0, 0.0) == 7.5
    assert jittered(10.0, 0.0) < jittered(10.0, 0.9)


def test_split_kind():
    assert split_kind("infrastructure:disk_full") == ("infrastructure", "disk_full")
    assert split_kind("transient") == ("transient", "")


def test_faults_of_the_infrastructure_spend_none_of_an_items_attempts():
    count = AttemptCount()
    for kind in ["infrastructure:worker_server"] * 3:  # parked by the third
        count.ended(kind)
    assert step("transient", count.of("transient")).action == "retry"  # its first lost worker
    count.ended("transient")
    assert count.of("infrastructure:disk_full") == 1  # a new run of faults: quick retries again
    count.ended("transient")
    assert step("transient", count.of("transient")).category == "retries_exhausted"
    assert count.made == 5


def test_transient_retries_are_jittered():
    """A stale NFS handle or an I/O error fails every run on that mount at
    once (transient): their retries all came back at the same instant."""
    assert step("transient", 2, jitter=0.0).delay == pytest.approx(3.0)
    assert step("transient", 2, jitter=0.999).delay == pytest.approx(5.0, abs=0.01)
