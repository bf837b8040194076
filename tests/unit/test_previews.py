"""Previews of every product kind: the PNG is made with the expected size, a
product that cannot be previewed is reported (never raised), and a preview
failure never costs a product its event."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from calstream.steps.previews import images
from calstream.steps.previews.make import make_previews
from calstream.steps.previews.naming import kind_of, planned_previews
from calstream.steps.previews.png import png_size
from tests.recording_bus import RecordingBus

ROOT = "jw01234001001_02101_00001_nrcb1"


def _image(path: Path, shape, *, dq=True, weight=False, dtype=np.float32) -> str:
    rng = np.random.default_rng(1)
    sci = rng.normal(10.0, 1.0, shape).astype(dtype)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI")]
    if dq:
        flags = np.zeros(shape, np.uint32)
        flags[..., 0, :] = 1  # a row of DO_NOT_USE pixels
        hdus.append(fits.ImageHDU(flags, name="DQ"))
    if weight:
        hdus.append(fits.ImageHDU(np.ones(shape, np.float32), name="WHT"))
    fits.HDUList(hdus).writeto(path)
    return str(path)


def _x1d(path: Path, integrations: int | None) -> str:
    wave = np.linspace(5.0, 12.0, 200)
    if integrations:
        wave = np.tile(wave, (integrations, 1))
    table = fits.BinTableHDU(Table({"WAVELENGTH": wave, "FLUX": np.ones_like(wave) * 1e-3}),
                             name="EXTRACT1D")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return str(path)


def _c1d(path: Path) -> str:
    """combine_1d's table: COMBINE1D, a row per wavelength (a c1d had no preview)."""
    wave = np.linspace(5.0, 12.0, 200)
    table = fits.BinTableHDU(Table({"WAVELENGTH": wave, "FLUX": np.ones_like(wave),
                                    "N_INPUT": np.full(wave.size, 2.0)}), name="COMBINE1D")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return str(path)


def _wfss(path: Path, sources: int, extension: str) -> str:
    """A WFSS x1d or c1d as jwst 2.0 writes it: a row per source, arrays padded with NaN."""
    wave = np.full((sources, 60), np.nan)
    wave[:, :50] = np.linspace(1.3, 1.7, 50)
    table = Table({"SOURCE_ID": np.arange(1, sources + 1, dtype=np.int32), "WAVELENGTH": wave,
                   "FLUX": np.arange(1.0, sources + 1.0)[:, None] * np.where(np.isnan(wave),
                                                                            np.nan, 1.0)})
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table, name=extension)]).writeto(path)
    return str(path)


def _phot(path: Path) -> str:
    mjd = 60000 + np.arange(50) / 1440.0
    Table({"MJD": mjd, "aperture_sum": np.ones(50), "net_aperture_sum": 1 - 0.01 * (
        np.abs(np.arange(50) - 25) < 5)}).write(path, format="ascii.ecsv")
    return str(path)


def _oifits(path: Path) -> str:
    t3 = fits.BinTableHDU(Table({"T3PHI": np.linspace(-2, 2, 35), "T3PHIERR": np.full(35, 0.3)}),
                          name="OI_T3")
    vis2 = fits.BinTableHDU(Table({"VIS2DATA": np.linspace(0.8, 1, 21),
                                   "VIS2ERR": np.full(21, 0.02)}), name="OI_VIS2")
    fits.HDUList([fits.PrimaryHDU(), t3, vis2]).writeto(path)
    return str(path)


PRODUCTS = {
    # file name: (maker, preview size (width, height), thumbnail size)
    f"{ROOT}_rate.fits": (lambda p: _image(p, (160, 160)), (160, 160), (128, 128)),
    f"{ROOT}_cal.fits": (lambda p: _image(p, (100, 50)), (100, 200), (64, 128)),
    f"{ROOT}_rateints.fits": (lambda p: _image(p, (3, 64, 64)), (256, 256), (128, 128)),
    f"{ROOT}_calints.fits": (lambda p: _image(p, (2, 300, 400)), (400, 300), (128, 96)),
    "jw01234-o001_t001_nircam_clear-f200w_i2d.fits":
        (lambda p: _image(p, (1100, 500), dq=False, weight=True), (250, 550), (58, 128)),
    "jw01234-o001_t001_nircam_clear-f200w_segm.fits":
        (lambda p: _image(p, (300, 300), dq=False, dtype=np.int32), (300, 300), (128, 128)),
    f"{ROOT}_s2d.fits": (lambda p: _image(p, (40, 400)), (400, 40), (128, 13)),
    f"{ROOT}_x1d.fits": (lambda p: _x1d(p, None), (640, 360), (128, 72)),
    f"{ROOT}_x1dints.fits": (lambda p: _x1d(p, 5), (640, 360), (128, 72)),
    "jw01234-o003_t003_miri_p750l_c1d.fits": (_c1d, (640, 360), (128, 72)),
    "jw01234-o011_t004_niriss_f150w-gr150c_c1d.fits":
        (lambda p: _wfss(p, 3, "COMBINE1D"), (640, 360), (128, 72)),
    "jw01234-o001_t001_nircam_f210m-clear-sub64p_phot.ecsv": (_phot, (640, 360), (128, 72)),
    "jw01234-o001_t001_niriss_f480m-nrm_ami-oi.fits": (_oifits, (640, 360), (128, 72)),
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_each_product_kind_gets_a_preview_and_a_thumbnail(tmp_path, name):
    maker, preview_size, thumb_size = PRODUCTS[name]
    product = maker(tmp_path / name)
    planned = planned_previews([product])
    assert [p["role"] for p in planned] == ["preview", "thumbnail"]
    result = make_previews(planned)
    assert result["failed"] == {} and len(result["made"]) == 2
    preview, thumbnail = (Path(p["path"]) for p in planned)
    assert preview.parent == tmp_path / "previews"
    assert png_size(preview.read_bytes()) == preview_size
    assert png_size(thumbnail.read_bytes()) == thumb_size


@pytest.mark.parametrize("extension", ["EXTRACT1D", "COMBINE1D"])
def test_a_wfss_spectrum_is_drawn_a_line_per_source_not_their_median(tmp_path, extension):
    """jwst 2.0's WFSS x1d and c1d hold a row per source: they were drawn as
    the integrations of one spectrum (their median, the rows faint), and the
    c1d not at all."""
    from calstream.steps.previews import plots

    few = plots.spectrum(_wfss(tmp_path / "few_x1d.fits", 3, extension))
    lines = few.axes[0].lines
    assert [line.get_label() for line in lines] == ["source 1", "source 2", "source 3"]
    assert [np.nanmax(line.get_ydata()) for line in lines] == [1.0, 2.0, 3.0]
    many = plots.spectrum(_wfss(tmp_path / "many_x1d.fits", 20, extension))
    assert len(many.axes[0].lines) == plots.SOURCES_SHOWN
    assert many.axes[0].get_title().endswith(f"(the first {plots.SOURCES_SHOWN} of 20 sources)")


def test_files_without_a_preview_are_left_alone():
    assert kind_of("x/jw01234001001_02101_00001_nrcb1_trapsfilled.fits") is None
    assert kind_of("x/jw01234-o001_t001_nircam_clear-f200w_cat.ecsv") is None
    assert kind_of("x/jw01234-o001_20261124t000000_image3_00001_asn.json") is None
    assert planned_previews(["a/b_trapsfilled.fits"]) == []


def test_masked_pixels_and_scaling():
    data = np.random.default_rng(2).normal(100.0, 5.0, (50, 50))
    data[10, 10] = 1e6  # a cosmic ray does not set the limits
    mask = np.zeros(data.shape, bool)
    mask[0] = True
    low, high = images.limits(data, mask)
    assert 70 < low < 100 < high < 150
    rgb = images.to_rgb(data, mask)
    assert (rgb[-1] == images.MASKED_RGB).all()  # row 0, drawn at the bottom
    assert tuple(rgb[20, 20]) != images.MASKED_RGB


def test_a_product_that_cannot_be_previewed_is_reported_not_raised(tmp_path):
    bad = tmp_path / f"{ROOT}_rate.fits"
    bad.write_bytes(b"SIMPLE  = not really a FITS file")
    good = _image(tmp_path / f"{ROOT}_cal.fits", (64, 64))
    result = make_previews(planned_previews([str(bad), good]))
    assert set(result["failed"]) == {bad.name}
    assert len(result["made"]) == 2 and all(Path(p).exists() for p in result["made"])
    assert not (tmp_path / "previews" / f"{ROOT}_rate.png").exists()


# -- the stage runner: the product event comes first, whatever the preview does --

class _Pool:
    """The calibration writes a rate file; the preview task's worker is lost."""

    stage = "detector1"

    def __init__(self):
        self.tasks = []

    async def run(self, task, kwargs, **_):
        from calstream.daemon.doers.worker_pool import TaskOutcome, WorkerLost

        self.tasks.append(task)
        if "previews" in task:
            raise WorkerLost("worker killed while drawing")
        out = Path(kwargs["output_dir"]) / f"{ROOT}_rate.fits"
        _image(out, (32, 32))
        return TaskOutcome(value={"outputs": [str(out)], "jwst_version": "3.0.0",
                                  "crds_context": "jwst_0001.pmap", "duration_seconds": 1.0})


def test_a_failed_preview_still_gets_its_product_event(tmp_path):
    from calstream.daemon.deciders.work_items import WorkItem
    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.work_item_runner import WorkItemRunner
    from calstream.daemon.operations.config import load
    from calstream.daemon.operations.metrics import Metrics

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    bus, pool = RecordingBus(), _Pool()
    runner = WorkItemRunner(cfg, publisher=bus, store=ProductStore(cfg.products), pool=pool,
                         metrics=Metrics(), crds_context="jwst_0001.pmap")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1", task="x:y", task_kwargs={},
                    program="01234", observation="001", name=ROOT,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": ROOT})
    anyio.run(runner.run, item)
    assert pool.tasks == ["x:y", "calstream.steps.previews.make:make_previews"]
    [(topic, event)] = bus.sent
    assert topic == "products" and event["outcome"] == "success"
    assert [p["role"] for p in event["previews"]] == ["preview", "thumbnail"]
    assert event["previews"][0]["of"] == f"{ROOT}_rate.fits"
    assert Path(event["outputs"][0]["path"]).exists()


def test_a_png_holds_exactly_the_pixels_it_was_given():
    """Read back with a decoder of its own (the chunks, their CRCs, the
    scanlines), whatever zlib level the writer uses."""
    import struct
    import zlib

    from calstream.steps.previews.png import encode_png

    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = encode_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        at += 12 + length
    assert struct.unpack(">IIBBBBB", chunks[b"IHDR"]) == (53, 37, 8, 2, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(37, 1 + 53 * 3)
    assert not rows[:, 0].any()  # filter type 0 on every scanline
    assert np.array_equal(rows[:, 1:].reshape(37, 53, 3), rgb)
    assert chunks[b"IEND"] == b""


def test_pixels_no_integration_measured_make_no_warning(tmp_path, recwarn):
    """A calints whose pixels are NaN in every integration drew numpy's
    "All-NaN slice encountered", logged as a WARNING by the daemon."""
    from calstream.steps.previews.make import preview_bytes

    path = tmp_path / f"{ROOT}_calints.fits"
    sci = np.ones((3, 32, 32), np.float32)
    sci[:, :4] = np.nan
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI")]).writeto(path)
    preview, thumbnail = preview_bytes(str(path), "image")
    assert png_size(preview) == (256, 256) and not [w for w in recwarn
                                                    if issubclass(w.category, RuntimeWarning)]


def _declared(path: Path, shape: tuple[int, ...]) -> str:
    """A FITS file whose SCI extension declares ``shape`` (float32), its data
    a hole in a sparse file: gigabytes claimed, nothing on disk."""
    header = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -32), ("NAXIS", len(shape)),
                          *((f"NAXIS{n + 1}", side) for n, side in enumerate(reversed(shape))),
                          ("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", "SCI")])
    with open(path, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode())
        f.write(header.tostring().encode())
        f.truncate(-(-(f.tell() + 4 * int(np.prod(shape))) // 2880) * 2880)
    return str(path)


def _declared_table(path: Path, rows: int) -> str:
    """An x1d whose EXTRACT1D table declares ``rows`` rows of two doubles, unwritten."""
    header = fits.Header([("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2),
                          ("NAXIS1", 16), ("NAXIS2", rows), ("PCOUNT", 0), ("GCOUNT", 1),
                          ("TFIELDS", 2), ("TTYPE1", "WAVELENGTH"), ("TFORM1", "D"),
                          ("TTYPE2", "FLUX"), ("TFORM2", "D"), ("EXTNAME", "EXTRACT1D")])
    with open(path, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode())
        f.write(header.tostring().encode())
        f.truncate(-(-(f.tell() + 16 * rows) // 2880) * 2880)
    return str(path)


_BOUNDED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from calstream.steps.previews.make import make_previews
from calstream.steps.previews.naming import planned_previews
from tests.recording_bus import RecordingBus
result = make_previews(planned_previews(sys.argv[1:]))
print(sorted(result["failed"].items()), len(result["made"]))
"""


def test_a_product_declaring_a_huge_array_is_not_read_whole(tmp_path):
    """The preview read the whole science array (and a cube's every
    integration) as float64, whatever size the file's header declared: a
    16 GB rateints or a 65536-pixel-square rate made the worker allocate
    gigabytes (a MemoryError under a 2 GB limit; without one, the machine's
    memory). A cube's preview is now the median of a few integrations read
    one plane at a time, and a plane too large to draw is refused unread."""
    import subprocess
    import sys

    cube = _declared(tmp_path / f"{ROOT}_rateints.fits", (4000, 1024, 1024))
    plane = _declared(tmp_path / f"{ROOT}_rate.fits", (65536, 65536))
    table = _declared_table(tmp_path / f"{ROOT}_x1d.fits", 1 << 30)
    done = subprocess.run([sys.executable, "-c", _BOUNDED, cube, plane, table],
                          capture_output=True,
                          text=True, timeout=120, env={"OPENBLAS_NUM_THREADS": "1",
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    failed = done.stdout.strip()
    assert f"{ROOT}_rate.fits" in failed and "too large to preview" in failed, failed
    assert f"{ROOT}_x1d.fits" in failed and "table EXTRACT1D of 17179869184 bytes" in failed
    assert f"{ROOT}_rateints.fits" not in failed and failed.endswith(" 2"), failed
    assert (tmp_path / "previews" / f"{ROOT}_rateints.png").exists()


def test_a_fifo_or_a_device_in_a_products_place_is_not_read(tmp_path):
    """A FIFO where a product was (made in the store by anyone who can write
    there; an adopted pending entry names it) held the preview worker until
    the task's time-out; /dev/zero would be read without end."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / f"{ROOT}_rate.fits"
    os.mkfifo(fifo)
    curve = tmp_path / f"{ROOT}_phot.ecsv"
    os.mkfifo(curve)
    script = ("import sys\nfrom calstream.steps.previews.make import make_previews\n"
              "print(sorted(make_previews([{'of': sys.argv[1], 'kind': 'image', 'role': r, "
              "'path': sys.argv[2] + '/previews/x' + r + '.png'} for r in ('preview', "
              "'thumbnail')] + [{'of': sys.argv[3], 'kind': 'light_curve', 'role': r, "
              "'path': sys.argv[2] + '/previews/y' + r + '.png'} for r in ('preview', "
              "'thumbnail')])['failed'].items()))")
    done = subprocess.run([sys.executable, "-c", script, fifo.name, str(tmp_path), curve.name],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("not a regular file") == 2, done.stdout
    from calstream.steps.previews.images import read_image

    with pytest.raises(OSError, match="not a regular file"):
        read_image("/dev/zero")


def test_a_cube_s_median_reads_no_more_pixels_than_the_largest_plane(tmp_path, monkeypatch):
    """A cube's median read 16 planes whatever their size: 16 planes of the
    largest plane drawn (2^27 pixels) were 16 GB held at once, declared by
    a tile-compressed file of kilobytes. Now fewer planes of a large one are
    read, at most MAX_PLANE_PIXELS in all (a quarter of this cube here)."""
    cube = _image(tmp_path / f"{ROOT}_rateints.fits", (16, 64, 64))
    monkeypatch.setattr(images, "MAX_PLANE_PIXELS", 4 * 64 * 64)
    read: list[tuple[str, int]] = []
    real = images._read

    def counted(hdu, shape, picks):
        data = real(hdu, shape, picks)
        read.append((hdu.name, data.size))
        return data

    monkeypatch.setattr(images, "_read", counted)
    data, mask = images.read_image(cube)
    assert data.shape == mask.shape == (64, 64) and mask[0].all() and not mask[1:].any()
    assert 0 < sum(size for name, size in read if name == "SCI") <= 4 * 64 * 64, read
    assert 0 < sum(size for name, size in read if name == "DQ") <= 4 * 64 * 64, read


def test_an_x1dints_of_thousands_of_integrations_draws_a_bounded_number_of_lines(tmp_path):
    """Each integration of an x1dints was a faint line behind their median: a
    TSO's thousands took a calibration worker 10 s of CPU for 5,000, and a
    table of the size allowed ran into the task's time-out. Now 100 of them,
    evenly spaced; the median is still over all."""
    from calstream.steps.previews import plots

    fig = plots.spectrum(_x1d(tmp_path / f"{ROOT}_x1dints.fits", 1000))
    [ax] = fig.axes
    assert len(ax.lines) == 100 + 1  # and the median (plots.INTEGRATIONS_SHOWN)
    assert "the median of 1000 integrations, 100 drawn" in ax.get_title()
    few = plots.spectrum(_x1d(tmp_path / f"{ROOT}_few_x1dints.fits", 5))
    assert len(few.axes[0].lines) == 5 + 1  # all of a few


def test_a_strip_longer_than_a_thousand_times_its_width_gets_a_preview(tmp_path):
    """A 2 x 5000 image was binned by 5 on both sides: no row left, and its
    preview failed with `IndexError: index 0 is out of bounds` for a reason."""
    from calstream.steps.previews.make import preview_bytes

    preview, thumbnail = preview_bytes(_image(tmp_path / f"{ROOT}_s2d.fits", (2, 5000)), "image")
    assert png_size(preview)[0] == 1000 and png_size(thumbnail)[0] == images.THUMB_SIDE
