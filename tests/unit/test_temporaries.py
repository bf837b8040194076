"""A link put at the name of one of calstream's temporaries takes no write
along (steps/regular_files.open_new). The names are easy to work out
(``.<name>.<pid>.tmp``), and before, a record, a preview or a pending
entry written through such a link landed wherever it pointed: out of the
product store or the work directory."""

import json
import os
from pathlib import Path

import pytest

from calstream.daemon.doers import pending_previews
from calstream.daemon.doers.durable_files import temporary_path, write_json_atomically
from calstream.daemon.doers.inbox.quarantine import Quarantine
from calstream.steps.previews.png import write_atomically
from calstream.steps.regular_files import open_new

WRITERS = {
    "a record (durable_files)": lambda p: write_json_atomically(p, {"ok": 1}),
    "a preview (png)": lambda p: write_atomically(p, b'{"ok": 1}'),
    "a pending-previews entry": lambda p: pending_previews._write(p, {"ok": 1}),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_link_at_a_temporary_s_name_takes_no_write_along(tmp_path, writer):
    outside = tmp_path / "outside.txt"
    outside.write_text("not calstream's")
    path = tmp_path / "store" / "record.json"
    path.parent.mkdir()
    temporary_path(path).symlink_to(outside)  # every writer names it so
    WRITERS[writer](path)
    assert outside.read_text() == "not calstream's"
    assert json.loads(path.read_text()) == {"ok": 1} and not path.is_symlink()
    assert not temporary_path(path).exists()


def test_open_new_writes_a_file_of_its_own_and_refuses_a_directory(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    with open_new(link) as f:
        f.write("new")
    assert target.read_text() == "kept" and link.read_text() == "new"
    assert not os.path.islink(link)
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        open_new(tmp_path / "d", binary=True)
    assert Path(tmp_path / "d").is_dir()


def test_a_link_at_a_quarantine_note_s_name_takes_no_write_along(tmp_path):
    """A note's name follows from the rejected file's (``<name>.reason.txt``):
    a link put there before the file was dropped in the inbox."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not calstream's")
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    (quarantine / "evil.fits.reason.txt").symlink_to(outside)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    bad = inbox / "evil.fits"
    bad.write_bytes(b"not a FITS file")
    q = Quarantine(directory=quarantine, on_reject=None, rules=None, counts=None, reads=None)
    dest = q._move(bad, "not a FITS file", None, None, 0.0)
    assert outside.read_text() == "not calstream's"
    note = quarantine / "evil.fits.reason.txt"
    assert not note.is_symlink() and "reason: not a FITS file" in note.read_text()
    assert dest == quarantine / "evil.fits" and dest.read_bytes() == b"not a FITS file"
