"""deciders/server_hang.py: a worker server is hung only when it used no CPU
for the whole span while a start waited, judged afresh for a new server."""

from calstream.daemon.deciders.server_hang import HangJudge


def test_no_progress_for_the_whole_span_is_a_hang():
    judge = HangJudge(hung_seconds=10)
    assert not judge.hung(0.0, 42, 100)
    assert not judge.hung(9.9, 42, 100)
    assert judge.hung(10.0, 42, 100)


def test_any_progress_starts_the_span_again():
    """A slow import on a loaded machine: a few ticks now and then."""
    judge = HangJudge(hung_seconds=10)
    judge.hung(0.0, 42, 100)
    assert not judge.hung(9.0, 42, 101)
    assert not judge.hung(18.0, 42, 101)
    assert judge.hung(19.0, 42, 101)


def test_a_new_server_or_an_unreadable_one_is_never_judged_hung_on_old_looks():
    judge = HangJudge(hung_seconds=10)
    judge.hung(0.0, 42, 100)
    assert not judge.hung(20.0, 43, 100)  # started again meanwhile: judged afresh
    assert not judge.hung(40.0, 43, None)  # /proc unreadable: nothing killed on a guess
    assert not judge.hung(45.0, 43, None)
    assert not judge.hung(50.0, None, None)  # no server yet
