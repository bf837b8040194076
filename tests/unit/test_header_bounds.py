"""How many cards a header may have at the door (steps/fits_header_blocks.py).

The walk read up to 10,000 blocks of a header (360,000 cards), and the
identity check then had astropy parse the primary header whole: a 24 MB
file with 324,000 primary cards passed the door at ~300 MB of the daemon's
memory and 2.5 s of its CPU, four such files at once over a GB. A header
is now at most 1,000 blocks (36,000 cards, a hundred times a JWST uncal's);
a larger one is a corrupt file, and one at the bound costs ~30 MB."""

import tracemalloc

import numpy as np

from calstream.steps.exposure import describe_exposure
from calstream.steps.fits_header_blocks import _MAX_HEADER_BLOCKS
from calstream.steps.fitsfile import BLOCK, CARD, FitsStatus, fits_layout
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"


def _with_primary_cards(blocks: int) -> bytes:
    """A valid small uncal whose primary header is ``blocks`` blocks long
    (cards of a form astropy itself must parse: a string and a comment)."""
    data = small_uncal(SMALL_UNCAL_HEADER, np.zeros((1, 2, 16, 16), np.uint16))
    end = next(i for i in range(0, len(data), CARD) if data[i:i + 8] == b"END     ")
    first_data = -(-(end + CARD) // BLOCK) * BLOCK
    extra = blocks * (BLOCK // CARD) - end // CARD - 1
    cards = b"".join(f"K{n:07d}= '{n}' / a comment".ljust(CARD).encode() for n in range(extra))
    primary = data[:end] + cards + b"END".ljust(CARD)
    assert len(primary) == blocks * BLOCK
    return primary + data[first_data:]


def test_a_header_past_the_bound_is_a_corrupt_file(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(_with_primary_cards(5_000))  # 14 MB, 180,000 cards: accepted before
    layout = fits_layout(path)
    assert layout.status is FitsStatus.CORRUPT
    assert "no END card in its first" in layout.reason


def test_a_header_at_the_bound_costs_the_door_tens_of_mb(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(_with_primary_cards(_MAX_HEADER_BLOCKS))
    tracemalloc.start()
    try:
        assert fits_layout(path).complete
        assert describe_exposure(path).exposure_id == NAME.removesuffix("_uncal.fits")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
