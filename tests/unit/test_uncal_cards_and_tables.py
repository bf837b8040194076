"""What stdatamodels reads of an uncal file beyond the door's keywords: the
image of every card (steps/fits_cards.py) and every binary table's columns
and the ASDF extension's first bytes (steps/uncal_tables.py,
steps/table_columns.py). Each was accepted by the door and failed in
detector1 (a fuzz of a stdatamodels-written uncal, session 23)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.exposure import BadExposure, describe_exposure
from calstream.steps.fits_cards import _cards, _plain, header_card_problem
from calstream.steps.fitsfile import fits_layout
from calstream.steps.synthetic.headers import asdf_extension
from calstream.steps.table_columns import TableError, row_columns

from .test_exposure import NAME, _with_extensions, uncal_bytes

CARD = 80


def _header(*cards: bytes) -> bytes:
    raw = b"".join(c.ljust(CARD) for c in (b"SIMPLE  =                    T", *cards, b"END"))
    return raw.ljust(-(-len(raw) // 2880) * 2880)


def test_the_headers_astropy_writes_are_plain(tmp_path):
    # The common case is checked as bytes, without astropy's card objects.
    (tmp_path / NAME).write_bytes(uncal_bytes())
    raw = (tmp_path / NAME).read_bytes()
    for hdu in fits_layout(tmp_path / NAME).hdus:
        cards = _cards(raw[hdu.header_offset:hdu.data_offset])
        assert all(_plain(cards)), [c for c, ok in zip(cards, _plain(cards), strict=False) if not ok]
    long = fits.Header()
    long["S_REGION"] = "POLYGON ICRS " + " ".join(["53.163526206 -27.791040000"] * 8)
    raw = long.tostring().encode()
    assert b"CONTINUE" in raw and all(_plain(_cards(raw)))


@pytest.mark.parametrize("card", [
    b"COMMENT hello", b"S_REGION= 'POLYGON ICRS 53.16", b"LONG    = 'abc'",
])
def test_a_card_whose_image_astropy_cannot_make_is_refused(card):
    # astropy joins a CONTINUE card to the card before it; stdatamodels asks
    # for every card's image (its FITS hash) and fails on these.
    assert "cannot be read" in header_card_problem(_header(card, b"CONTINUE  junk"))


@pytest.mark.parametrize("card", [
    # values astropy cannot parse, but mends when asked for the card's image:
    # stdatamodels opens such a file all the same
    b"TELESCOP= NaN", b"S_REGION= 'POLYGON ICRS 53.16",
    b"LONG    = 'abc&'", b"lower   = 1", b"NUMBER  = 1.5e3", b"X" * 80,
])
def test_a_card_astropy_reads_or_mends_is_accepted(card):
    assert header_card_problem(_header(card)) is None


def test_a_plain_card_is_always_one_astropy_reads():
    # The byte check is a shortcut: whatever it passes, astropy must read too.
    rng = random.Random(7)
    forms = [b"KEY     = 'a''b' / c", b"KEY     =                  -12", b"KEY     = 1.5E-3",
             b"KEY     = T", b"KEY     =", b"COMMENT x", b"LONG    = 'a&'", b"CONTINUE  'b'"]
    plain = 0
    for _ in range(3000):
        cards = [bytearray(rng.choice(forms).ljust(CARD)) for _ in range(rng.randrange(1, 4))]
        for card in cards:
            for _ in range(rng.randrange(3)):
                card[rng.randrange(CARD)] = rng.choice(b" '&/=.-+0123456789EDTFabc()")
        raw = _header(*map(bytes, cards))
        if all(_plain(_cards(raw))):
            plain += 1
            str(fits.Header.fromstring(raw.decode("ascii")))  # raises if the shortcut lied
    assert plain > 300


@pytest.mark.parametrize("forge, words", [
    ((b"TFORM1  =", b"TFORM1  = 1.5"), "TFORM1 = 1.5 is no column format"),
    ((b"TTYPE1  =", b"TTYPE1  = 7"), "TTYPE1 = 7 is no column name"),
    ((b"TTYPE1  =", b"TTYPE1  = ''"), "the table has no TTYPE1"),
    ((b"TTYPE1  =", b"COMMENT"), "the table has no TTYPE1"),
    ((b"TFIELDS =", b"COMMENT"), "TFIELDS = None is no count"),
    ((b"TFORM1  =", b"TFORM1  = '9B'"), "rows of 9 bytes, not NAXIS1"),
    ((b"#ASDF 1.0.0", b"#JUNK 1.0.0"), "holds no ASDF file"),
])
def test_a_table_astropy_could_not_read_is_refused(tmp_path, forge, words):
    from .test_exposure import GOOD

    primary = fits.PrimaryHDU()
    for key, value in {**GOOD, "SUBSIZE1": 16, "SUBSIZE2": 16}.items():
        primary.header[key] = value
    sci = fits.ImageHDU(np.zeros((1, 2, 16, 16), np.uint16), name="SCI")
    path = tmp_path / NAME
    fits.HDUList([primary, sci, asdf_extension()]).writeto(path)
    describe_exposure(path)  # the file as written passes
    raw = path.read_bytes()
    old, new = forge
    at = raw.index(old, 2880)
    width = len(old) if old.startswith(b"#") else CARD  # the ASDF bytes, or a card
    path.write_bytes(raw[:at] + new.ljust(width) + raw[at + width:])
    with pytest.raises(BadExposure, match=words):
        describe_exposure(path)


def test_every_binary_table_has_columns_astropy_can_make(tmp_path):
    # GROUP and INT_TIMES are tables in a real uncal; their columns too.
    table = fits.BinTableHDU.from_columns([fits.Column("v", "J", array=np.arange(3))],
                                          name="GROUP")
    raw = _with_extensions(tmp_path, fits.ImageHDU(np.zeros((1, 2, 16, 16), np.uint16),
                                                   name="SCI"), table).read_bytes()
    at = raw.index(b"TFORM1  =", 2880)
    (tmp_path / NAME).write_bytes(raw[:at] + b"TFORM1  = 'W'".ljust(CARD) + raw[at + CARD:])
    with pytest.raises(BadExposure, match="HDU 2 \\(GROUP\\): the table cannot be read"):
        describe_exposure(tmp_path / NAME)


@pytest.mark.parametrize("header, columns", [
    ({"TFIELDS": 2, "NAXIS1": 12, "TTYPE1": "a", "TFORM1": "1J", "TFORM2": "8A"},
     [("a", 0, 4), (None, 4, 8)]),
    ({"TFIELDS": 1, "NAXIS1": 2, "TFORM1": "12X"}, [(None, 0, 2)]),
    ({"TFIELDS": 1, "NAXIS1": 16, "TFORM1": "1QB(99)"}, [(None, 0, 16)]),
    ({"TFIELDS": 0, "NAXIS1": 0}, []),
])
def test_the_columns_fill_the_row(header, columns):
    assert [(c.name, c.offset, c.width) for c in row_columns(header)] == columns
    with pytest.raises(TableError, match="rows of"):
        row_columns({**header, "NAXIS1": header["NAXIS1"] + 1})
