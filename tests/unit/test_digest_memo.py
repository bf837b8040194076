"""The in-process memo of file reads (daemon/doers/digest_memo.py): the
second read of an unchanged file is free, a changed file is read again."""

import os

from calstream.daemon.doers import digest_memo
from calstream.steps.fitsfile import file_digest


def test_an_unchanged_file_is_hashed_once_and_a_rewritten_one_again(tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(digest_memo, "_memo", type(digest_memo._memo)())
    monkeypatch.setattr(digest_memo, "file_digest", lambda p: reads.append(p) or file_digest(p))
    path = tmp_path / "a.fits"
    path.write_bytes(b"x" * 4096)
    first = digest_memo.digest_of(path)
    assert first == file_digest(path) and digest_memo.digest_of(path) == first
    assert len(reads) == 1
    # Replaced by a file of the same size and mtime: its inode tells (and a
    # rewrite in place changes the ctime, which no caller can set back).
    st = path.stat()
    new = tmp_path / "b.fits"
    new.write_bytes(b"y" * 4096)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    new.replace(path)
    assert digest_memo.digest_of(path) == file_digest(path) != first
    assert len(reads) == 2


def test_a_committed_products_digest_is_taken_from_its_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(digest_memo, "_memo", type(digest_memo._memo)())
    path = tmp_path / "rate.fits"
    path.write_bytes(b"z" * 100)
    digest_memo.remember_written(path, file_digest(path))
    monkeypatch.setattr(digest_memo, "file_digest", lambda p: (_ for _ in ()).throw(AssertionError))
    assert digest_memo.digest_of(path) == file_digest(path)
