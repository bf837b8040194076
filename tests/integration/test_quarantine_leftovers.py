"""What a stop left in the quarantine, settled at the watcher's start
(doers/inbox/quarantine_leftovers.py): the quarantine is a directory others
write, so its notes are untrusted; and a move to another filesystem can be
cut off at any of its steps. Real files, a real watcher; no broker."""

import os

import pytest

from .test_watcher import NAME, Recorder, dirs, make, running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(120)]
__all__ = ["dirs"]  # the fixture, used by name

DATA = b"not a FITS file" * 100


@pytest.fixture
def anyio_backend():
    return "asyncio"


def left_by_a_stop(quarantine, file_line: str, claim: bytes) -> None:
    """A claim, its note naming ``file_line`` and its mark, as a stop leaves them."""
    quarantine.mkdir(exist_ok=True)
    (quarantine / NAME).write_bytes(claim)
    (quarantine / (NAME + ".reason.txt")).write_text(
        f"reason: not a FITS file\nfile: {file_line}\nexposure_id: -\ndigest: -\n")
    (quarantine / (NAME + ".unreported")).write_text("its dead letter is not acknowledged yet\n")


@pytest.mark.parametrize("claim", [DATA, b""], ids=["moved", "claim-empty"])
@pytest.mark.parametrize("named", ["outside", "dot-dot", "relative"])
async def test_a_forged_note_s_path_is_neither_looked_at_nor_named(dirs, tmp_path, claim, named):
    """A note's ``file:`` line was taken as it was: the path it named was
    looked up (an empty claim beside an existing path undid the "move":
    claim, note and mark removed, the path named in the log) or named in
    the bad_file letter as the file's inbox path. Now a note naming no path
    under the inbox is reported as the quarantined file itself, with a
    reason saying its note is forged or damaged."""
    inbox, quarantine = dirs[0], dirs[1]
    secret = tmp_path / "secret"
    secret.write_bytes(b"someone else's")
    file_line = {"outside": str(secret), "dot-dot": f"{inbox}/../secret",
                 "relative": "secret"}[named]
    left_by_a_stop(quarantine, file_line, claim)
    rec = Recorder()
    async with running(make(dirs, rec)):
        await wait_until(lambda: rec.rejections, timeout=10)
        await wait_until(lambda: not (quarantine / (NAME + ".unreported")).exists(), timeout=10)
    [r] = rec.rejections
    assert r.path == quarantine / NAME and r.quarantined_to == quarantine / NAME
    assert "forged or damaged" in r.reason and "secret" not in r.reason
    assert (quarantine / NAME).read_bytes() == claim, "the quarantined file is kept"
    assert secret.read_bytes() == b"someone else's"


async def test_a_copy_to_another_filesystem_stopped_before_the_inbox_s_unlink_is_one_file(dirs):
    """A move to a quarantine on another filesystem copies the file, renames
    the copy onto its claim, then unlinks the inbox's file. A stop between
    the last two left the whole copy in quarantine and the file in the
    inbox: the start reported the copy, then judged the inbox's file again
    and quarantined it as NAME.1, two bad_file letters and two copies for
    one delivery. Now the copy (the same bytes as the file still in the
    inbox) is undone, and the file is quarantined once, under its name."""
    inbox, quarantine = dirs[0], dirs[1]
    (inbox / NAME).write_bytes(DATA)
    left_by_a_stop(quarantine, str(inbox / NAME), DATA)
    rec = Recorder()
    async with running(make(dirs, rec)) as w:
        await wait_until(lambda: rec.rejections and not (inbox / NAME).exists(), timeout=10)
        await wait_until(lambda: w.stats().pending == 0 and not w.quarantine.pending)
        await wait_until(lambda: not (quarantine / (NAME + ".unreported")).exists(), timeout=10)
    [r] = rec.rejections
    assert r.path == inbox / NAME and r.quarantined_to == quarantine / NAME
    assert sorted(os.listdir(quarantine)) == [NAME, NAME + ".reason.txt"]
    assert (quarantine / NAME).read_bytes() == DATA


async def test_a_quarantined_file_whose_name_has_a_new_delivery_is_reported_not_undone(dirs):
    """The inbox holds other bytes under the name (a correction delivered
    after the move): the quarantined file is the only copy of the bad one,
    so it is reported, and the correction judged on its own."""
    inbox, quarantine = dirs[0], dirs[1]
    (inbox / NAME).write_bytes(b"a correction, still not FITS" * 10)
    left_by_a_stop(quarantine, str(inbox / NAME), DATA)
    rec = Recorder()
    async with running(make(dirs, rec)) as w:
        await wait_until(lambda: len(rec.rejections) == 2, timeout=10)
        await wait_until(lambda: w.stats().pending == 0)
    first = next(r for r in rec.rejections if r.quarantined_to == quarantine / NAME)
    assert first.path == inbox / NAME and (quarantine / NAME).read_bytes() == DATA


async def test_a_note_naming_a_file_in_the_quarantine_is_named_never_acted_on(dirs):
    """A note whose ``file:`` is another quarantined file of the same bytes
    (no move of ours writes one): its claim is reported, never undone as a
    move whose file is still in the inbox (that removed the quarantined
    file and its note, and nothing judged it again)."""
    quarantine = dirs[1]
    quarantine.mkdir()
    other = quarantine / NAME.replace("_uncal.fits", "_uncal.1.fits")
    other.write_bytes(DATA)
    left_by_a_stop(quarantine, str(other), DATA)
    rec = Recorder()
    async with running(make(dirs, rec)):
        await wait_until(lambda: rec.rejections, timeout=10)
    [r] = rec.rejections
    assert r.path == other and r.quarantined_to == quarantine / NAME
    assert (quarantine / NAME).read_bytes() == DATA and other.read_bytes() == DATA
