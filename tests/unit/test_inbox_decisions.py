"""The inbox watcher's decisions, from facts alone (no filesystem, no clock)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from calstream.daemon.deciders import inbox_file as decide
from calstream.daemon.deciders.inbox_file import (
    MAX_PENDING_REPORTS,
    UNEXPECTED_ATTEMPTS,
    UNREADABLE_ATTEMPTS,
    Announce,
    CheckStructure,
    FileState,
    Forget,
    InboxRules,
    ReadIdentity,
    Reject,
    RetryLater,
    Wait,
)
from calstream.steps.fitsfile import FitsLayout, FitsStatus, HduLayout

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"
RULES = InboxRules(
    settle_seconds=2.0,
    incomplete_timeout=100.0,
    retry_initial=1.0,
    retry_max=10.0,
    required_extensions=("SCI", "ASDF"),
    look_interval=0.5,
)
SIG = (5760, 1_000_000_000, 42, 1_000_000_000)
NOW = 1000.0  # monotonic


NEW = FileState()  # a file not looked at yet


def stat(state=NEW, *, sig=SIG, handled=None, now=NOW, age=0.0, name=NAME, writer_done=False,
         **more):
    return decide.after_stat(
        state, name=name, sig=sig, handled_sig=handled, now=now, age=age, rules=RULES,
        writer_done=writer_done, **more,
    )


def layout(*extnames, status=FitsStatus.COMPLETE, reason="", size=SIG[0]) -> FitsLayout:
    hdus = tuple(
        HduLayout(i, 2880 * i, 2880, 0, None if i == 0 else "IMAGE", name)
        for i, name in enumerate((None, *extnames))
    )
    return FitsLayout(Path(NAME), status, reason, size, size, hdus)


def structure(state, found, now=NOW):
    return decide.after_structure(state, name=NAME, sig=SIG, layout=found, now=now, rules=RULES)


def settled(now=NOW) -> FileState:
    """A file first seen long ago, unchanged since: ready for its structure check."""
    state, decision = stat(now=now, age=60.0)
    assert decision == CheckStructure()
    return state


# ------------------------------------------------------------ settle


def test_a_file_gone_before_it_was_handled_is_forgotten():
    _, decision = stat(sig=None)
    assert decision == Forget(still_there=False, why="gone from the inbox before it was handled")


def test_a_fifo_or_directory_named_like_an_exposure_is_rejected_at_once():
    # Reading a FIFO would block the watcher; none of these is a delivery.
    _, decision = stat(sig=(decide.NOT_A_FILE, 1, 2, 3))
    assert isinstance(decision, decide.Reject) and "not a regular file" in decision.reason


def test_an_event_about_a_file_already_handled_is_forgotten_again():
    _, decision = stat(handled=SIG)
    assert decision == Forget(still_there=True)
    # Changed since it was handled: a new content, looked at afresh.
    state, decision = stat(handled=(1, 2, 3, 4))
    assert state.sig == SIG and isinstance(decision, Wait)


def test_a_new_file_waits_for_the_settle_time_looking_at_it_meanwhile():
    state, decision = stat(age=0.0)
    assert state == FileState(sig=SIG, changed_at=NOW)
    assert decision == Wait(NOW + RULES.look_interval)  # looked at again before it settles
    _, decision = stat(state, now=NOW + 1.8)
    assert decision == Wait(NOW + RULES.settle_seconds)  # no later than when it settles
    _, decision = stat(state, now=NOW + RULES.settle_seconds)
    assert decision == CheckStructure()


def test_a_file_older_than_the_settle_time_needs_no_wait():
    state, decision = stat(age=60.0)
    assert state.changed_at == NOW - RULES.settle_seconds and decision == CheckStructure()
    state, decision = stat(age=0.5)  # found half a second after its last write
    assert state.changed_at == NOW - 0.5 and decision == Wait(NOW + RULES.look_interval)


def test_a_file_its_writer_is_done_with_needs_no_settle_wait():
    # Closed after writing, or moved in: its structure is checked at once ...
    state, decision = stat(age=0.0, writer_done=True)
    assert state == FileState(sig=SIG, changed_at=NOW) and decision == CheckStructure()
    # ... and so is a later content (a corrected redelivery moved over it).
    grown = (SIG[0] + 2880, *SIG[1:])
    _, decision = stat(state, sig=grown, now=NOW + 0.01, writer_done=True)
    assert decision == CheckStructure()
    # Without that word from the writer, a change is waited out as before.
    _, decision = stat(state, sig=grown, now=NOW + 0.01)
    assert decision == Wait(NOW + 0.01 + RULES.look_interval)


def test_a_closed_file_found_short_still_waits_for_the_rest():
    # A writer that closes after each piece: the close says nothing about
    # completeness, the structure does.
    state, decision = stat(age=0.0, writer_done=True)
    assert decision == CheckStructure()
    state, decision = structure(state, layout("SCI"))
    assert isinstance(decision, Wait)
    _, decision = stat(state, now=NOW + 1, writer_done=True)
    assert isinstance(decision, Wait)  # unchanged and short: keep waiting


def test_a_file_rewritten_while_tracked_starts_over_as_a_live_arrival():
    identified = replace(settled(), identified=True, incomplete_sig=SIG, failures=3)
    grown = (SIG[0] + 2880, *SIG[1:])
    state, decision = stat(identified, sig=grown, now=NOW + 5, age=60.0)
    assert state == FileState(sig=grown, changed_at=NOW + 5, rewritten=True)
    assert decision == Wait(NOW + 5 + RULES.look_interval)


def test_a_file_not_named_as_an_uncal_exposure_is_rejected():
    _, decision = stat(age=60.0, name="README.txt")
    assert isinstance(decision, Reject) and "'README.txt' is not a JWST exposure name" in (
        decision.reason
    )
    _, decision = stat(age=60.0, name=NAME.replace("_uncal", "_rate"))
    assert isinstance(decision, Reject) and "not an uncal exposure" in decision.reason


# ------------------------------------------------------------ structure


def test_a_whole_exposure_goes_on_to_its_identity():
    state = settled()
    assert structure(state, layout("SCI", "ASDF")) == (state, ReadIdentity())


def test_a_file_that_grew_while_its_layout_was_read_is_looked_at_again_now():
    state = settled()
    assert structure(state, layout("SCI", "ASDF", size=SIG[0] + 1)) == (state, Wait(NOW))


@pytest.mark.parametrize("status", [FitsStatus.NOT_FITS, FitsStatus.CORRUPT])
def test_not_fits_or_corrupt_is_rejected_at_once(status):
    _, decision = structure(settled(), layout(status=status, reason="not a FITS file"))
    assert decision == Reject(f"{NAME}: not a FITS file")


def test_an_incomplete_file_waits_and_says_why_once():
    found = layout("SCI", status=FitsStatus.INCOMPLETE, reason="HDU 1 declares 8192 bytes")
    state, decision = structure(settled(), found)
    assert state.incomplete_sig == SIG and state.incomplete_reason == "HDU 1 declares 8192 bytes"
    assert decision == Wait(NOW + RULES.look_interval, "waiting: HDU 1 declares 8192 bytes")
    state = replace(state, incomplete_sig=(1, 2, 3, 4))  # it changed, and is still short
    _, decision = structure(state, found)
    assert decision == Wait(NOW + RULES.look_interval)  # said already


def test_valid_fits_without_the_required_extensions_is_not_yet_whole():
    _, decision = structure(settled(), layout("SCI"))
    assert decision == Wait(
        NOW + RULES.look_interval, "waiting: valid FITS with 2 HDU(s) but no ASDF extension yet"
    )


def test_a_file_short_and_unchanged_for_the_incomplete_timeout_is_truncated():
    found = layout("SCI", status=FitsStatus.INCOMPLETE, reason="HDU 1 declares 8192 bytes")
    state, _ = structure(settled(), found)
    changed_at = state.changed_at
    _, decision = stat(state, now=NOW + 1)  # no new structure check: it has not changed
    unchanged = NOW + 1 - changed_at  # looked at again after a quarter of that (back-off below)
    assert decision == Wait(NOW + 1 + max(RULES.look_interval, unchanged / 4))
    _, decision = stat(state, now=changed_at + RULES.incomplete_timeout - 0.1)
    assert decision == Wait(changed_at + RULES.incomplete_timeout)
    _, decision = stat(state, now=changed_at + RULES.incomplete_timeout)
    assert decision == Reject(
        f"{NAME}: truncated: HDU 1 declares 8192 bytes; unchanged for 100 s "
        "(incomplete_timeout 100 s)"
    )


def test_a_link_out_of_the_roots_is_rejected_before_any_read():
    state, decision = stat(link_outside="/etc/jw01234001001_02101_00001_nrcb1_uncal.fits")
    assert decision == Reject(f"{NAME}: a symbolic link to /etc/jw01234001001_02101_00001_"
                              "nrcb1_uncal.fits, outside the inbox's roots: not read")
    assert state.sig == SIG  # remembered as handled if the quarantine leaves it


def test_the_looks_at_a_short_file_that_does_not_change_back_off():
    """A write to it is an event, looked at at once: the looks themselves
    back off, to at most INCOMPLETE_LOOK_MAX (every look_interval, thousands
    of short files kept the watcher from serving a whole one)."""
    found = layout("SCI", status=FitsStatus.INCOMPLETE, reason="HDU 1 declares 8192 bytes")
    state, _ = structure(settled(), found)
    changed_at = state.changed_at
    waits = []
    for unchanged in (1, 8, 20, 60, RULES.incomplete_timeout - 1):
        _, decision = stat(state, now=changed_at + unchanged)
        waits.append(decision.until - (changed_at + unchanged))
    assert waits[0] == RULES.look_interval
    assert waits[1] == 2.0  # a quarter of the time it has been unchanged
    assert waits[2] == waits[3] == decide.INCOMPLETE_LOOK_MAX
    assert waits[4] == 1  # never past the incomplete timeout


# ------------------------------------------------------------ identity, announce


def test_a_file_rewritten_while_its_identity_was_read_is_looked_at_again_now():
    state = settled()
    assert decide.after_identity(state, sig=SIG, sig_after_read=None, now=NOW) == (state, Wait(NOW))


def test_an_identified_file_is_announced_and_announced_again_after_a_failure():
    state, decision = decide.after_identity(
        replace(settled(), failures=2), sig=SIG, sig_after_read=SIG, now=NOW
    )
    assert state.identified and state.failures == 0 and decision == Announce()
    state, retry = decide.after_announce_failed(state, now=NOW, rules=RULES)
    assert state.failures == 1 and retry == RetryLater(at=NOW + 1.0, delay=1.0)
    _, decision = stat(state, now=retry.at)
    assert decision == Announce()  # not read again


def test_failed_announcements_are_retried_without_end_at_a_bounded_interval():
    state = replace(settled(), identified=True)
    delays = []
    for _ in range(8):
        state, retry = decide.after_announce_failed(state, now=NOW, rules=RULES)
        delays.append(retry.delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


# ------------------------------------------------------------ bounded retries


def test_an_unreadable_file_is_retried_then_rejected():
    state, decisions = settled(), []
    for _ in range(UNREADABLE_ATTEMPTS):
        state, decision = decide.after_read_error(
            state, name=NAME, error="[Errno 5] Input/output error", now=NOW, rules=RULES
        )
        decisions.append(decision)
    assert decisions[:-1] == [RetryLater(NOW + d, d) for d in (1.0, 2.0, 4.0, 8.0)]
    assert decisions[-1] == Reject(f"{NAME}: unreadable: [Errno 5] Input/output error")


def test_unexpected_errors_are_retried_then_the_file_is_left_until_it_changes():
    state, decisions = settled(), []
    for _ in range(UNEXPECTED_ATTEMPTS):
        state, decision = decide.after_unexpected_error(state, now=NOW, rules=RULES)
        decisions.append(decision)
    assert all(isinstance(d, RetryLater) for d in decisions[:-1])
    assert max(d.delay for d in decisions[:-1]) == RULES.retry_max
    last = decisions[-1]
    assert isinstance(last, Forget) and last.still_there and last.gave_up
    # A change of content is a new file: the count starts again.
    state, _ = stat(state, sig=(1, 2, 3, 4), now=NOW + 1)
    assert state.unexpected == 0


def test_backoff_doubles_up_to_its_cap():
    assert [RULES.backoff(n) for n in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert MAX_PENDING_REPORTS > 0


def test_look_interval_follows_the_settle_time_and_the_poll_interval():
    assert decide.look_interval(0.5, 1.0) == 0.25
    assert decide.look_interval(10.0, 0.1) == 0.1
    assert decide.look_interval(10.0, 10.0) == 1.0
    assert decide.look_interval(0.0, 1.0) == 0.02


def test_a_rejection_from_bytes_read_while_the_file_changed_is_a_look_again():
    sig, later = (100, 1, 2, 3), (50, 5, 2, 6)  # cut and rewritten (cp over it)
    reject = decide.Reject("x: no complete primary header")
    assert decide.unless_changed(reject, sig=sig, sig_now=later, now=7.0) == decide.Wait(7.0)
    assert decide.unless_changed(reject, sig=sig, sig_now=None, now=7.0) == decide.Wait(7.0)
    assert decide.unless_changed(reject, sig=sig, sig_now=sig, now=7.0) is reject
    announce = decide.ReadIdentity()
    assert decide.unless_changed(announce, sig=sig, sig_now=later, now=7.0) is announce


def test_a_file_whose_move_was_parked_is_moved_as_judged_until_it_changes():
    """Its move refused for now (a full or read-only quarantine): at each
    re-check it was read and hashed again from its layout on, though its
    stat had not changed. Now the judgement is kept while the stat stays;
    a file that changed is looked at afresh."""
    state, _ = stat(age=10.0)  # settled, about to have its structure read
    judged = Reject(f"{NAME}: name and header disagree", "sha256:ab")
    parked = decide.move_parked(state, judged)
    assert stat(parked, now=NOW + 30) == (parked, judged)
    changed = (SIG[0] + 2880, *SIG[1:])
    state, decision = stat(parked, sig=changed, now=NOW + 30)
    assert state.refused is None and isinstance(decision, Wait)
