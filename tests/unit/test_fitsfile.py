import hashlib
import io

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps import fitsfile
from calstream.steps.fitsfile import (
    BLOCK,
    FitsStatus,
    IncompleteFits,
    NotFits,
    file_digest,
    fits_layout,
    read_primary_header,
    read_primary_values,
)


def fits_bytes(*, table: bool = True) -> bytes:
    primary = fits.PrimaryHDU()
    primary.header["PROGRAM"] = "01234"
    hdus = [
        primary,
        fits.ImageHDU(
            np.arange(2 * 3 * 40 * 40, dtype=np.uint16).reshape(2, 3, 40, 40), name="SCI"
        ),
    ]
    if table:
        # A variable-length column puts bytes in the heap, counted by PCOUNT.
        col = fits.Column("v", "PJ()", array=np.array([[1, 2, 3], [4]], dtype=object))
        hdus.append(fits.BinTableHDU.from_columns([col], name="HEAPY"))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def card(text: str) -> bytes:
    return text.ljust(80).encode("ascii")


def header(*cards: str) -> bytes:
    raw = b"".join(card(c) for c in cards) + card("END")
    return raw + b" " * (-len(raw) % BLOCK)


@pytest.fixture
def whole(tmp_path):
    data = fits_bytes()
    p = tmp_path / "whole.fits"
    p.write_bytes(data)
    return p, data


def write(tmp_path, data: bytes, name: str = "f.fits"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_complete_file(whole):
    path, data = whole
    layout = fits_layout(path)
    assert layout.status is FitsStatus.COMPLETE and layout.complete
    assert layout.n_hdus == 3
    assert layout.expected_size == layout.size == len(data)
    assert [h.extname for h in layout.hdus] == [None, "SCI", "HEAPY"]
    assert layout.hdus[1].data_size == 2 * 3 * 40 * 40 * 2
    assert layout.hdus[2].data_size > 0
    assert layout.raise_for_status() is layout
    # Each HDU's axes as astropy reads them
    with fits.open(path) as hdul:
        assert [h.axes for h in layout.hdus] == [
            tuple(hdu.header[f"NAXIS{i}"] for i in range(1, hdu.header["NAXIS"] + 1))
            for hdu in hdul]
    assert layout.hdus[1].axes == (40, 40, 3, 2)


@pytest.mark.parametrize(
    "where, words",
    [
        (lambda hdus: 0, "empty file"),
        (lambda hdus: 10, "first 10 bytes"),
        (lambda hdus: 100, "without an END card"),  # primary header, before END
        (lambda hdus: hdus[0].header_size - 1, "last block is 1 bytes short"),
        (lambda hdus: hdus[1].header_offset + 100, "without an END card"),  # SCI header
        (lambda hdus: hdus[1].data_offset + 1000, "declares"),  # SCI data
        (lambda hdus: hdus[2].end - 1, "padding"),  # only the last padding byte missing
    ],
)
def test_truncated_is_incomplete(tmp_path, whole, where, words):
    path, data = whole
    cut = where(fits_layout(path).hdus)
    p = write(tmp_path, data[:cut])
    layout = fits_layout(p)
    assert layout.status is FitsStatus.INCOMPLETE, layout.reason
    assert words in layout.reason
    assert layout.expected_size > layout.size
    with pytest.raises(IncompleteFits, match="f.fits"):
        layout.raise_for_status()


def test_missing_final_padding_is_tolerated_only_on_request(tmp_path):
    data = fits_bytes(table=False)
    sci_end = 2 * BLOCK + 2 * 3 * 40 * 40 * 2
    p = write(tmp_path, data[:sci_end])
    assert fits_layout(p).status is FitsStatus.INCOMPLETE
    layout = fits_layout(p, allow_unpadded_end=True)
    assert layout.complete and layout.expected_size == sci_end
    # Data itself short: never complete.
    p = write(tmp_path, data[: sci_end - 1])
    assert not fits_layout(p, allow_unpadded_end=True).complete


def test_cut_at_an_hdu_boundary_is_valid_fits(tmp_path, whole):
    # Structure alone cannot see this; the watcher also requires the SCI
    # extension (steps.exposure.missing_extensions).
    _, data = whole
    layout = fits_layout(write(tmp_path, data[:BLOCK]))
    assert layout.complete and layout.n_hdus == 1


@pytest.mark.parametrize(
    "data",
    [
        b"hello world, this is not FITS at all" * 100,
        b"\x89HDF\r\n\x1a\n" + b"\0" * 3000,
        card("SIMPLE  =                    F"),
    ],
)
def test_not_fits(tmp_path, data):
    layout = fits_layout(write(tmp_path, data))
    assert layout.status is FitsStatus.NOT_FITS
    assert "SIMPLE" in layout.reason
    with pytest.raises(NotFits):
        read_primary_header(tmp_path / "f.fits")


def test_preallocated_space_is_incomplete(tmp_path, whole):
    _, data = whole
    # Whole file preallocated, nothing written yet.
    assert fits_layout(write(tmp_path, b"\0" * len(data))).status is FitsStatus.INCOMPLETE
    # Written up to an HDU boundary, the rest still NULs.
    half = data[: 2 * BLOCK] + b"\0" * (len(data) - 2 * BLOCK)
    layout = fits_layout(write(tmp_path, half))
    assert layout.status is FitsStatus.INCOMPLETE and "NUL" in layout.reason
    # NULs after the last HDU.
    layout = fits_layout(write(tmp_path, data + b"\0" * BLOCK))
    assert layout.status is FitsStatus.INCOMPLETE


@pytest.mark.parametrize("tail", [b"Z" * BLOCK, b" " * BLOCK, b"SPECIAL".ljust(BLOCK)])
def test_trailing_bytes_that_start_no_hdu_are_corrupt(tmp_path, whole, tail):
    # FITS allows "special records" after the last HDU, but astropy (jwst's
    # reader) refuses such a file as it reads on: the door refuses it too.
    _, data = whole
    layout = fits_layout(write(tmp_path, data + tail))
    assert layout.status is FitsStatus.CORRUPT and layout.trailing_bytes == BLOCK
    assert "start no HDU" in layout.reason
    with pytest.raises(OSError, match="END card"), fits.open(tmp_path / "f.fits") as hdul:
        len(hdul)  # every HDU read, as stdatamodels reads them


def test_partial_next_extension_header_is_incomplete(tmp_path, whole):
    _, data = whole
    assert fits_layout(write(tmp_path, data + b"XTENS")).status is FitsStatus.INCOMPLETE


def test_corrupt_headers(tmp_path):
    bad_bitpix = header(
        "SIMPLE  =                    T",
        "BITPIX  =                   12",
        "NAXIS   =                    0",
    )
    layout = fits_layout(write(tmp_path, bad_bitpix))
    assert layout.status is FitsStatus.CORRUPT and "BITPIX" in layout.reason

    no_naxis2 = header(
        "SIMPLE  =                    T",
        "BITPIX  =                   16",
        "NAXIS   =                    2",
        "NAXIS1  =                   10",
    )
    layout = fits_layout(write(tmp_path, no_naxis2))
    assert layout.status is FitsStatus.CORRUPT and "NAXIS2" in layout.reason


@pytest.mark.parametrize("cards, words", [
    # a number in quotes is text to every reader; Python's int() took it, and "1_6"
    (("NAXIS1  = '10'",), "non-integer NAXIS1 = \"'10'\""),
    (("NAXIS1  =                  1_0",), "non-integer NAXIS1 = '1_0'"),
    # a structural keyword twice: which one counts would be the reader's choice
    (("NAXIS1  =                   10", "NAXIS1  =                   20"), "declares NAXIS1 twice"),
    (("NAXIS1  =                   10", "EXTNAME = 'A'", "EXTNAME = 'SCI'"), "declares EXTNAME twice"),
    (("NAXIS1  =                   10", "BZERO   =                    0", "BZERO   =    1"),
     "declares BZERO twice"),
    # what astropy reads to make the HDU, beyond its size: unreadable, jwst opens nothing
    (("NAXIS1  =                   10", "BZERO   =                  NaN"), "BZERO = NaN is not a"),
    (("NAXIS1  =                   10", "BSCALE  =                  0.0"), "BSCALE = 0.0 cannot"),
    (("NAXIS1  =                   10", "EXTEND  =                  1_6"), "EXTEND = 1_6 is neither"),
    (("NAXIS1  =                   10", "PCOUNT  = '0'"), "PCOUNT = '0' is not an integer"),
    (("NAXIS1  =                   10", "BLANK   =                  1.5"), "BLANK = 1.5 is not an"),
    (("NAXIS1  =                   10", "EXTNAME = 'SCI'    ! x"), "EXTNAME card that holds no"),
    (("NAXIS1  =                   10", "EXTNAME = SCI"), "EXTNAME card that holds no"),
    # astropy reads on past such an END, into the next header's cards
    (("NAXIS1  =                   10", "END     = 'sci '"), "END card with more on it"),
])
def test_structural_cards_are_read_as_a_reader_reads_them(tmp_path, cards, words):
    raw = header("SIMPLE  =                    T", "BITPIX  =                   16",
                 "NAXIS   =                    1", *cards)
    layout = fits_layout(write(tmp_path, raw + b"\0" * BLOCK))
    assert layout.status is FitsStatus.CORRUPT
    assert words in layout.reason


def test_huge_declared_data_is_not_read(tmp_path, monkeypatch):
    hdr = header(
        "SIMPLE  =                    T",
        "BITPIX  =                   16",
        "NAXIS   =                    3",
        "NAXIS1  =               100000",
        "NAXIS2  =               100000",
        "NAXIS3  =                 1000",
    )
    p = tmp_path / "huge.fits"
    p.write_bytes(hdr)
    with open(p, "r+b") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GiB of declared-but-short data

    read = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self._f = f

        def read(self, n=-1):
            out = self._f.read(n)
            read.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(
        fitsfile, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False
    )
    layout = fits_layout(p)
    assert layout.status is FitsStatus.INCOMPLETE
    assert layout.expected_size == BLOCK + (-(-2 * 10**13 // BLOCK)) * BLOCK
    assert sum(read) <= 2 * BLOCK  # the claimed 20 TB are never read, whatever the clock says


def test_read_primary_header_only(tmp_path, whole):
    _, data = whole
    # The data is missing, the primary header is whole: enough.
    p = write(tmp_path, data[: BLOCK + 200])
    hdr = read_primary_header(p)
    assert hdr["PROGRAM"] == "01234" and "XTENSION" not in hdr
    for cut in (100, 1000):  # before END; after END, inside the first block
        with pytest.raises(IncompleteFits):
            read_primary_header(write(tmp_path, data[:cut]))


def test_primary_values_are_the_header_s_each_looked_up_once(tmp_path, whole, monkeypatch):
    _, data = whole
    cards = data[:BLOCK].replace(card("END"), card("NGROUPS = NaN") + card("END"), 1)
    p = write(tmp_path, cards + data[BLOCK:])
    asked: dict[str, int] = {}
    look_up = fits.Header.__getitem__

    def counted(self, key):
        asked[key] = asked.get(key, 0) + 1
        return look_up(self, key)

    values = read_primary_values(p)
    monkeypatch.setattr(fits.Header, "__getitem__", counted)
    for _ in range(3):
        assert values["PROGRAM"] == "01234" and values.get("PROGRAM") == "01234"
        assert "PROGRAM" in values and "NEXPOSUR" not in values
        assert values.get("NEXPOSUR", "none") == "none"
        with pytest.raises(KeyError):
            values["NEXPOSUR"]
        # A card astropy cannot read raises at every access, as the header's does.
        with pytest.raises((fits.VerifyError, ValueError)):
            values["NGROUPS"]
    assert asked["PROGRAM"] == 1 and asked["NEXPOSUR"] == 1 and asked["NGROUPS"] == 3
    monkeypatch.undo()
    header = read_primary_header(p)
    assert list(values) == list(header) and len(values) == len(header)


def test_digest(tmp_path, whole):
    path, data = whole
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert file_digest(path) == expected
    assert file_digest(path) == expected
    assert file_digest(path, chunk=7) == expected
    changed = bytearray(data)
    changed[-BLOCK - 1] ^= 1
    assert file_digest(write(tmp_path, bytes(changed))) != expected
