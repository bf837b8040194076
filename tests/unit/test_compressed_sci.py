"""A tile-compressed SCI at the door: its tile table held to its heap and to
what one read may hold (steps/tile_table.py), its pixels read a plane at a
time (steps/compressed_sci.py), so a forged file cannot make the daemon's
main process hold more than about two reads."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps import compressed_sci
from calstream.steps.compressed_sci import ImpossibleImage, compressed_sci_axes
from calstream.steps.fitsfile import fits_layout
from calstream.steps.table_columns import TableError
from calstream.steps.tile_table import MAX_READ_BYTES, check_tile_table


def _compressed(path, cube, **kw):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(cube, name="SCI", **kw)]).writeto(path)
    return path


def _table(path):
    """(the tile table's header as astropy parses it, its rows' bytes, where
    the rows start in the file)."""
    table = fits_layout(path).hdus[1]
    raw = path.read_bytes()
    header = fits.Header.fromstring(raw[table.header_offset:table.data_offset])
    rows = header["NAXIS1"] * header["NAXIS2"]
    return header, raw[table.data_offset:table.data_offset + rows], table.data_offset


@pytest.fixture
def small(tmp_path):
    cube = np.random.default_rng(2).integers(0, 60000, (1, 2, 16, 16)).astype(np.uint16)
    return _table(_compressed(tmp_path / "c.fits", cube))


def test_a_table_astropy_wrote_passes(small, tmp_path):
    header, rows, _ = small
    check_tile_table(header, rows)
    # with a column beside the descriptors, quantized floats written losslessly by gzip
    floats = np.random.default_rng(3).normal(size=(2, 16, 16)).astype(np.float32)
    check_tile_table(*_table(_compressed(tmp_path / "f.fits", floats,
                                         compression_type="GZIP_2"))[:2])


@pytest.mark.parametrize("changes, words", [
    # a plane or a tile larger than one read may hold (64 MiB), whatever the file's size
    ({"ZNAXIS1": 8192, "ZNAXIS2": 8192, "ZTILE1": 8192}, "one plane of the image is"),
    ({"ZNAXIS3": 64, "ZTILE2": 2048, "ZTILE3": 64, "ZTILE4": 1, "ZNAXIS1": 2048,
      "ZNAXIS2": 2048, "ZTILE1": 2048}, "a tile"),
    ({"ZTILE1": 0}, "ZTILE1 = 0 is no positive count"),
    ({"ZNAXIS": 0}, "declares no image"),
    ({"ZBITPIX": 7}, "ZBITPIX = 7"),
    ({"ZBITPIX": True}, "ZBITPIX = True"),  # True == 1, and a key of every dict of ints
    # the heap cut short, or moved off the table's data
    ({"PCOUNT": 7}, "outside the heap"),
    ({"THEAP": 10}, "puts the heap outside"),
    ({"THEAP": 10**9}, "puts the heap outside"),
    # columns that do not make the row astropy reads
    ({"TFORM1": "1PB(116)junk"}, "is no column format"),
    ({"TFORM1": "2PB(116)"}, "is no column format"),
    ({"TFORM1": 7}, "is no column format"),
    ({"TFORM1": "1QB(116)"}, "rows of 16 bytes, not NAXIS1 = 8"),
    ({"TFIELDS": 2, "TFORM2": "1D"}, "rows of 16 bytes, not NAXIS1 = 8"),
    ({"NAXIS2": 3}, "the table's rows are"),
])
def test_a_table_no_reader_should_trust_is_refused(small, changes, words):
    header, rows, _ = small
    forged = header.copy()
    for key, value in changes.items():
        forged[key] = value
    with pytest.raises(TableError, match=words):
        check_tile_table(forged, rows)


@pytest.mark.parametrize("row, count, offset", [
    (0, 10**6, 0),  # more bytes than the heap holds
    (1, 4, 10**6),  # past the heap, into what follows the table
    (3, -1, 0), (3, 1, -5),  # negative: no descriptor
    (31, 2**31 - 1, 2**31 - 1),  # the last row, at the limits of its integers
])
def test_a_descriptor_outside_the_heap_is_refused(small, row, count, offset):
    header, rows, _ = small
    forged = bytearray(rows)
    forged[8 * row:8 * row + 8] = np.array([count, offset], ">i4").tobytes()
    with pytest.raises(TableError, match="a tile of COMPRESSED_DATA lies outside"):
        check_tile_table(header, bytes(forged))


def test_a_descriptor_past_the_heap_is_refused_before_any_tile_is_read(tmp_path):
    # astropy's plane reads take a tile wherever its descriptor points: past
    # the heap, into the next HDU's bytes, which the whole read then refused.
    cube = np.random.default_rng(4).integers(0, 60000, (1, 2, 16, 16)).astype(np.uint16)
    path = tmp_path / "c.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(cube, name="SCI"),
                  fits.ImageHDU(np.arange(9000, dtype=np.uint8), name="ASDF")]).writeto(path)
    header, rows, at = _table(path)
    raw = bytearray(path.read_bytes())
    count, offset = np.frombuffer(rows[:8], ">i4")
    raw[at:at + 8] = np.array([count, header["PCOUNT"] + 100], ">i4").tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(ImpossibleImage, match="lies outside the heap"):
        compressed_sci_axes(path, fits_layout(path).hdus[1], path.name)


def test_the_pixels_are_read_a_few_planes_at_a_time(tmp_path, monkeypatch):
    # 4 MiB of pixels compressed to a fraction of that: reading them whole,
    # as the door did, held all 4 MiB (and twice more in copies) at once in
    # the daemon's main process. With reads bounded to two planes (128 kiB
    # each; 64 MiB in the daemon), the door holds a small part of that.
    monkeypatch.setattr(compressed_sci, "MAX_READ_BYTES", 2 * 256 * 256 * 2)
    rng = np.random.default_rng(5)
    cube = (1000 + rng.integers(0, 4, (1, 32, 256, 256))).astype(np.uint16)
    path = _compressed(tmp_path / "c.fits", cube)
    assert path.stat().st_size < cube.nbytes / 4
    tracemalloc.start()
    try:
        axes = compressed_sci_axes(path, fits_layout(path).hdus[1], path.name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert axes == {"NAXIS": 4, "NAXIS1": 256, "NAXIS2": 256, "NAXIS3": 32, "NAXIS4": 1}
    assert peak < cube.nbytes / 4, peak
    with fits.open(path) as hdul:  # what was read plane by plane is what jwst reads
        assert (hdul["SCI"].data == cube).all()


def test_the_bound_on_a_read_holds_a_full_frame_in_doubles():
    # The largest JWST detector, 2048 x 2048, one plane of 64-bit floats.
    assert 2048 * 2048 * 8 <= MAX_READ_BYTES


@pytest.mark.parametrize("shape, item, bound, reads", [
    ((1, 10, 4, 4), 2, 64, [((0, slice(0, 2)), (2, 4, 4)), ((0, slice(2, 4)), (2, 4, 4)),
                            ((0, slice(4, 6)), (2, 4, 4)), ((0, slice(6, 8)), (2, 4, 4)),
                            ((0, slice(8, 10)), (2, 4, 4))]),
    ((2, 3, 4, 4), 2, 100, [((0, slice(0, 3)), (3, 4, 4)), ((1, slice(0, 3)), (3, 4, 4))]),
    ((3, 4, 4), 8, 1, [((slice(0, 1),), (1, 4, 4)), ((slice(1, 2),), (1, 4, 4)),
                       ((slice(2, 3),), (1, 4, 4))]),  # a plane larger than the bound: one
    ((4, 4), 2, 1, [(Ellipsis, (4, 4))]),
])
def test_the_reads_cover_the_image_once_in_bounded_slabs(monkeypatch, shape, item, bound, reads):
    monkeypatch.setattr(compressed_sci, "MAX_READ_BYTES", bound)
    assert list(compressed_sci._slabs(shape, item)) == reads


def test_a_million_tiny_planes_take_few_reads(monkeypatch):
    # (N, 1, 1, 1): one read a plane would be N reads, each through N tiles.
    monkeypatch.setattr(compressed_sci, "MAX_READ_BYTES", 64)
    reads = list(compressed_sci._slabs((10**6, 1, 1, 1), 1))
    assert len(reads) == -(-10**6 // 64)  # against a million, one read a plane
    assert reads[0] == ((slice(0, 64),), (64, 1, 1, 1))
    assert sum(r[1][0] for r in reads) == 10**6  # every plane once
