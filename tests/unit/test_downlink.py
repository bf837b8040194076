"""Simulated downlink: growing files and atomic renames."""

from __future__ import annotations

import threading
import time

from calstream.steps.synthetic.downlink import deliver


def test_copies_in_order(tmp_path):
    sources = []
    for n in range(3):
        path = tmp_path / f"f{n}.fits"
        path.write_bytes(bytes([n]) * 1000)
        sources.append(path)
    inbox = tmp_path / "inbox"
    delivered = deliver(sources, inbox)
    assert delivered == [inbox / s.name for s in sources]
    assert all(d.read_bytes() == s.read_bytes() for d, s in zip(delivered, sources, strict=True))


def _watch(path, seen, stop):
    while not stop.is_set():
        if path.exists():
            seen.add(path.stat().st_size)
        time.sleep(0.002)


def _sizes_seen_delivering(tmp_path, **options) -> tuple[set[int], object]:
    """Deliver a 40 kB file with `options`, watching its size in the inbox:
    (every size seen, the inbox)."""
    source = tmp_path / "big.fits"
    source.write_bytes(b"x" * 40_000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    seen: set[int] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(inbox / "big.fits", seen, stop))
    watcher.start()
    deliver([source], inbox, pieces=4, **options)
    stop.set()
    watcher.join()
    return seen, inbox


def test_pieces_are_visible_while_the_file_grows(tmp_path):
    seen, inbox = _sizes_seen_delivering(tmp_path, piece_delay=0.05)
    assert {10_000, 20_000, 30_000} & seen  # partial sizes were observed
    assert (inbox / "big.fits").stat().st_size == 40_000


def test_temp_then_rename_never_shows_a_partial_file(tmp_path):
    seen, inbox = _sizes_seen_delivering(tmp_path, piece_delay=0.03, temp_then_rename=True)
    assert seen <= {40_000}
    assert sorted(p.name for p in inbox.iterdir()) == ["big.fits"]
