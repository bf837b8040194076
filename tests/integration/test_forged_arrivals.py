"""Arrivals produced on the raw topic by someone other than this daemon's
door: the admission judges the file itself, as the door would have.

The door announces a file only once its headers declare every byte it
holds and the extensions a whole uncal file has (deciders/inbox_file.py);
the admission read only the primary header and the SCI axes, so an arrival
naming a file still being copied in (its size and digest those of the
piece written so far) was run on that piece."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calstream.daemon.doers import kafka
from calstream.steps.exposure import describe_exposure
from calstream.steps.fitsfile import file_digest, fits_layout
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import (
    announced_then_decided,
    daemon_config,
    metric,
    products,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _arrival(path: Path, header_of: Path) -> contract.Message:
    """The arrival someone would send for ``path`` as it is now, with the
    header copy of the whole file ``header_of``."""
    info = describe_exposure(header_of)
    return contract.build(
        "arrival", contract.event_id("arrival", info.exposure_id, file_digest(path)),
        exposure_id=info.exposure_id, path=str(path), digest=file_digest(path),
        size=path.stat().st_size, detected_at=contract.utc_now(), source="watch",
        priority="live", header=info.header)


async def test_an_arrival_of_a_file_not_yet_whole_is_refused(tmp_path, broker, kit,
                                                            unique_prefix):
    # No watcher: nothing else would look at the file.
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    whole = kit.uncal_files[0]
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    piece = cfg.inbox / whole.name
    shutil.copyfile(whole, piece)
    sci = next(h for h in fits_layout(piece).hdus if h.extname == "SCI")
    os.truncate(piece, sci.data_offset + sci.data_size // 2)  # half its pixels copied so far
    arrival = _arrival(piece, header_of=whole)
    async with running_daemon(cfg):
        seen = await announced_then_decided(cfg, arrival)
    assert [p for p in products(seen) if p["outcome"] == "success"] == []
    (letter,) = [m for m in seen if isinstance(m, contract.Message) and m.type == "dead_letter"]
    assert letter["category"] == "bad_input" and letter["stage"] == "detector1", letter.body
    assert "not a whole exposure" in letter["reason"], letter["reason"]


async def test_a_file_whose_arrival_no_reader_would_take_is_quarantined(tmp_path, broker,
                                                                       unique_prefix):
    """A header value of 1.2 MB (a CONTINUE'd TARGPROP: any string keyword
    the arrival copies) made an arrival over the 1 MB every reader refuses.
    The producer refused it too, as a fault of the broker's: the door
    retried the announcement for as long as the file stayed, never a dead
    letter. A message over that limit is now refused where it is encoded,
    as a message its schema refuses, and the file quarantined."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["watcher"])
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    name = "jw01234001001_02101_00001_nrcb1_uncal.fits"
    header = {**SMALL_UNCAL_HEADER, "TARGPROP": "x" * 1_200_000}
    data = small_uncal(header, np.zeros((1, header["NGROUPS"], 16, 16), np.uint16))
    async with running_daemon(cfg):
        (cfg.inbox / name).write_bytes(data)
        seen = await wait_for(cfg, ["deadletter"], lambda ms: bool(ms), timeout=60)
    (letter,) = seen
    assert letter["category"] == "bad_file" and letter["stage"] == "watcher", letter.body
    assert "its arrival message is refused" in letter["reason"], letter["reason"]
    assert (cfg.quarantine / name).exists()


async def test_an_arrival_whose_file_was_corrected_since_is_stale_not_forged(
        tmp_path, broker, kit, unique_prefix):
    """A corrected redelivery renamed over the file before its first
    arrival was admitted (a backlog): the first arrival's header copy and
    size are no longer the file's, and it was dead-lettered as a forgery
    (``invalid_message`` "the arrival's header copy is not the file's"). The
    file's bytes are asked first: other bytes than the arrival names make
    it stale, as the design says, and the correction's own arrival runs."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    whole = kit.uncal_files[0]
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    delivered = cfg.inbox / whole.name
    shutil.copyfile(whole, delivered)
    first = _arrival(delivered, header_of=delivered)
    # The correction: another ENGQLPTG, and a note of it.
    with fits.open(whole) as hdul:
        hdul[0].header["ENGQLPTG"] = "CALCULATED_FULL"
        hdul[0].header["HISTORY"] = "corrected " + "x" * 60
        hdul.writeto(tmp_path / "corrected.fits")
    os.replace(tmp_path / "corrected.fits", delivered)
    async with running_daemon(cfg) as daemon:
        producer = kafka.producer(cfg)
        await producer.start()
        try:
            await producer.send_and_wait(Topics(cfg.topic_prefix).name("raw"),
                                         contract.encode(first),
                                         key=first["exposure_id"].encode())
        finally:
            await producer.stop()
        await until(lambda: metric(scrape(daemon.ops.address), "calstream_stage_runs_total",
                                   stage="detector1", outcome="stale") == 1, timeout=60)
        letters = await read_all(cfg, ["deadletter"])
    assert letters == []
