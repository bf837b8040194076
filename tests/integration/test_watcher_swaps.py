"""A file replaced by a FIFO between the watcher's stat and its reads.

The watcher stats a file (a FIFO, socket or device is rejected there) and
then reads it during its turn. A FIFO put in the file's place between the
two held the read in ``open`` for ever: that file's turn of the door and a
thread were gone, and four such files (the door's turns) stopped every
arrival. The reads now open without waiting and refuse what is no regular
file; the next look rejects it, and the door goes on."""

import contextlib
import os

import pytest

from calstream.daemon.doers.file_reads import FileReads

from .test_watcher import (
    NAME,
    Recorder,
    dirs,
    drop,
    make,
    running,
    sha,
    uncal_bytes,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]
__all__ = ["dirs"]  # the fixture, used by name

SWAPPED = NAME.replace("00001", "00002")


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_file_swapped_for_a_fifo_while_checked_is_rejected_and_the_door_goes_on(
        dirs, monkeypatch):
    inbox, quarantine, _ = dirs
    rec = Recorder()
    layout = FileReads.layout

    async def swapped_first(self, path):
        if path.name == SWAPPED and not path.is_fifo():  # after the stat, before the read
            path.unlink()
            os.mkfifo(path)
        return await layout(self, path)

    monkeypatch.setattr(FileReads, "layout", swapped_first)
    # One turn: a read held for ever would hold the whole door.
    w = make(dirs, rec, io_concurrency=1)
    try:
        async with running(w):
            drop(inbox, SWAPPED, uncal_bytes(SWAPPED))
            await wait_until(lambda: rec.rejections, timeout=30)
            drop(inbox, NAME, uncal_bytes())
            await wait_until(lambda: rec.arrivals, timeout=30)
    finally:  # a read the old code left waiting in open() is let go
        for fifo in (inbox / SWAPPED, quarantine / SWAPPED):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    [r] = rec.rejections
    assert "not a regular file" in r.reason and r.quarantined_to == quarantine / SWAPPED
    assert [a.exposure_id for a in rec.arrivals] == [NAME.removesuffix("_uncal.fits")]


async def test_a_link_out_of_the_roots_is_quarantined_unread_and_one_into_them_announced(
        dirs, tmp_path):
    """A link in the inbox to a whole uncal elsewhere: the door hashed the
    file out there and announced it, the admission then refused its path
    (outside the allowed roots), and every start announced it again. Now the
    door refuses it unread, as the docs' table always said; a link into an
    allowed root (another inbox of the deployment) is still a delivery."""
    inbox, quarantine, _ = dirs
    outside, staging = tmp_path / "elsewhere", tmp_path / "staging"
    outside.mkdir()
    staging.mkdir()
    (outside / SWAPPED).write_bytes(uncal_bytes(SWAPPED))
    (staging / NAME).write_bytes(uncal_bytes())
    rec = Recorder()
    async with running(make(dirs, rec, roots=[inbox, staging])):
        (inbox / SWAPPED).symlink_to(outside / SWAPPED)
        (inbox / NAME).symlink_to(staging / NAME)
        await wait_until(lambda: rec.rejections and rec.arrivals, timeout=30)
    [r] = rec.rejections
    assert r.reason == (f"{SWAPPED}: a symbolic link to {outside / SWAPPED}, outside the "
                        "inbox's roots: not read")
    assert (quarantine / SWAPPED).is_symlink() and (outside / SWAPPED).exists()
    assert [a.exposure_id for a in rec.arrivals] == [NAME.removesuffix("_uncal.fits")]


REWRITTEN = NAME.replace("00001", "00003")


async def test_a_file_copied_over_while_its_header_is_read_is_looked_at_again(
        dirs, monkeypatch):
    """``cp`` over an inbox file truncates it and writes the new bytes: the
    door's header read, just after its walk found the old file whole, found
    no complete header, and the door quarantined the new file while it was
    still being copied (a ``bad_file`` for a good delivery). A read fault of
    a file that changed meanwhile is a look again, as a change seen in the
    walk or the digest is."""
    inbox = dirs[0]
    rec = Recorder()
    new = uncal_bytes(REWRITTEN, ENGQLPTG="CALCULATED")
    copy: dict = {}
    identity = FileReads.identity

    async def copied_over_first(self, path):
        if path.name != REWRITTEN or copy:
            return await identity(self, path)
        copy["file"] = open(path, "wb")  # noqa: SIM115 - the copy goes on after the read
        copy["file"].write(new[:1000])  # truncated, and a piece of the new header written
        copy["file"].flush()
        try:
            return await identity(self, path)
        finally:
            copy["read"] = True

    monkeypatch.setattr(FileReads, "identity", copied_over_first)
    async with running(make(dirs, rec)):
        drop(inbox, REWRITTEN, uncal_bytes(REWRITTEN))
        await wait_until(lambda: copy.get("read"), timeout=30)
        with copy["file"] as f:  # the rest of the copy
            f.write(new[1000:])
        await wait_until(lambda: rec.arrivals or rec.rejections, timeout=30)
    assert rec.rejections == []
    assert [a.digest for a in rec.arrivals] == [sha(new)]


async def test_a_file_rewritten_in_place_while_walked_is_looked_at_again(dirs, monkeypatch):
    """A writer that rewrites a file in place (``rsync --inplace``, ``dd
    conv=notrunc``) leaves, part-way, the new headers over the old bytes:
    the same size, a structure that is neither. The walk found it corrupt
    and the door quarantined it at once, although the file had changed
    since the look the walk began with."""
    inbox = dirs[0]
    rec = Recorder()
    # A longer primary header: its first 3 blocks over the old file leave
    # old pixels where the new walk expects a header (corrupt as it is).
    new = uncal_bytes(REWRITTEN, **{f"NOTE{i:04d}": "x" * 20 for i in range(40)})
    rewrite: dict = {}
    layout = FileReads.layout

    async def rewritten_first(self, path):
        if path.name == REWRITTEN and not rewrite:
            rewrite["file"] = f = open(path, "r+b")  # noqa: SIM115 - goes on after the walk
            f.write(new[:3 * 2880])
            f.flush()
            # A write sets the file's times from a coarse clock; the writer's
            # own later utime (rsync's) makes the change one a stat sees at once.
            st = os.fstat(f.fileno())
            os.utime(f.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
            try:
                return await layout(self, path)
            finally:
                # The writer finishes as the walk ends, before the door
                # decides on what it walked: written from the test's own
                # task instead, a loaded machine let the door look again
                # at the half-written file first (a flake, once).
                with f:
                    f.write(new[3 * 2880:])
        return await layout(self, path)

    monkeypatch.setattr(FileReads, "layout", rewritten_first)
    async with running(make(dirs, rec)):
        drop(inbox, REWRITTEN, uncal_bytes(REWRITTEN))
        await wait_until(lambda: rec.arrivals or rec.rejections, timeout=30)
    assert rec.rejections == []
    assert [a.digest for a in rec.arrivals] == [sha(new)]


async def test_a_good_file_renamed_over_a_bad_one_being_quarantined_is_not(dirs, monkeypatch):
    """A bad delivery, then at once its correction renamed over it (the
    sender saw its mistake): the door decided the bad file's fate, hashed it
    for the quarantine note, and moved whatever the name held then, the
    good file, into quarantine with the bad one's reason. The name is
    checked against the file judged just before the move; another file
    there is looked at afresh."""
    inbox, quarantine, _ = dirs
    rec = Recorder()
    bad = uncal_bytes(REWRITTEN, PROGRAM="04321")  # name and header disagree
    good = uncal_bytes(REWRITTEN)
    digest_or_none = FileReads.digest_or_none
    swapped: list[bool] = []

    async def corrected_while_hashed(self, path, size):
        found = await digest_or_none(self, path, size)
        if path.name == REWRITTEN and not swapped:
            swapped.append(True)
            drop(inbox, REWRITTEN, good)  # the correction, renamed over it
        return found

    monkeypatch.setattr(FileReads, "digest_or_none", corrected_while_hashed)
    async with running(make(dirs, rec)):
        drop(inbox, REWRITTEN, bad)
        await wait_until(lambda: rec.arrivals or rec.rejections, timeout=30)
    assert swapped and rec.rejections == []
    assert [a.digest for a in rec.arrivals] == [sha(good)]
    assert not quarantine.exists() or list(quarantine.iterdir()) == []


async def test_a_loop_of_links_named_like_an_exposure_is_no_error(dirs, caplog):
    """A symbolic link that leads to itself (or round a loop) is no file, as
    a link leading nowhere is: the look at it raised ELOOP out of the step,
    an "unexpected error" logged with its traceback eight times before the
    file was given up. Now it is forgotten as a dangling link is."""
    inbox = dirs[0]
    rec = Recorder()
    async with running(make(dirs, rec)) as w:
        (inbox / SWAPPED).symlink_to(inbox / SWAPPED)  # a loop of one
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals and w.stats().pending == 0)
        assert w.stats().errors == 0 and "unexpected error" not in caplog.text
    assert not rec.rejections
