"""A file whose headers declare more bytes than any exposure has.

A valid uncal header over a sparse file (``truncate -s 80G``: no disk, a
hole the kernel reads as zeros) passed the structure walk and the header
checks (the counts are each within their bounds), and the watcher then
hashed the whole hole during its turn: a minute of a core and one of the
door's turns per file, and four of them held every other arrival. Such a
file is refused by its declared size before any of its data is read."""

import os

import pytest

from calstream.steps.exposure import MAX_UNCAL_BYTES
from calstream.steps.synthetic.headers import write_sparse_uncal

from .test_watcher import (
    HEADER,
    NAME,
    Recorder,
    dirs,
    drop,
    make,
    running,
    uncal_bytes,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]
__all__ = ["dirs"]  # the fixture, used by name

HUGE = "jw01234001001_02101_00009_nrcb1_uncal.fits"


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_file_larger_than_any_exposure_is_refused_unread(dirs):
    inbox = dirs[0]
    rec = Recorder()
    staging = inbox.parent / "staging"
    staging.mkdir()
    # Each count within its bound; together 82 GB of 64 x 64 frames.
    header = {**HEADER, "EXPOSURE": "00009", "NGROUPS": 1000, "NINTS": 10_000}
    size = write_sparse_uncal(staging / HUGE, header, rows=64, columns=64)
    assert size > MAX_UNCAL_BYTES
    async with running(make(dirs, rec)):
        os.replace(staging / HUGE, inbox / HUGE)
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.rejections and rec.arrivals, timeout=60)
    [r] = rec.rejections
    assert r.path.name == HUGE and "larger than any exposure" in r.reason, r.reason
    assert r.digest is None  # refused by its headers: not hashed for the record either
    assert [a.path.name for a in rec.arrivals] == [NAME]
