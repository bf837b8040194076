"""The fidelity comparison names what differs, and by how much."""

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..fidelity_compare import DATA, METADATA, compare_products, compare_records, unexplained


def _write(path, sci, date="2026-01-01", rows=(1.0, 2.0)):
    primary = fits.PrimaryHDU()
    primary.header["DATE"] = date
    table = fits.BinTableHDU(Table({"FLUX": np.array(rows)}), name="EXTRACT1D")
    fits.HDUList([primary, fits.ImageHDU(sci, name="SCI"), table]).writeto(path)
    return path


def test_identical_data_with_another_date_is_a_metadata_difference(tmp_path):
    sci = np.arange(12.0).reshape(3, 4)
    a = _write(tmp_path / "a.fits", sci)
    b = _write(tmp_path / "b.fits", sci.copy(), date="2026-01-02")
    [d] = compare_products(a, b)
    assert (d.where, d.kind) == ("PRIMARY header DATE", METADATA)
    assert unexplained([d], {"PRIMARY header DATE": "when written"}) == []


def test_a_changed_pixel_and_a_changed_column_are_data_differences(tmp_path):
    sci = np.arange(12.0).reshape(3, 4)
    changed = sci.copy()
    changed[1, 2] += 0.5
    a = _write(tmp_path / "a.fits", sci)
    b = _write(tmp_path / "b.fits", changed, rows=(1.0, 2.5))
    found = {d.where: d for d in compare_products(a, b)}
    assert set(found) == {"SCI data", "EXTRACT1D column FLUX"}
    assert all(d.kind == DATA for d in found.values())
    assert found["SCI data"].detail.startswith("1 of 12 elements differ")
    assert "largest difference 0.5" in found["SCI data"].detail
    assert unexplained(found.values(), {"PRIMARY header DATE": "when written"})


def test_ecsv_columns_and_metadata(tmp_path):
    a, b = tmp_path / "a.ecsv", tmp_path / "b.ecsv"
    Table({"x": [1.0, 2.0]}, meta={"date": "one"}).write(a)
    Table({"x": [1.0, 2.0 + 1e-12]}, meta={"date": "two"}).write(b)
    found = {d.where: d.kind for d in compare_products(a, b)}
    assert found == {"column x": DATA, "meta.date": METADATA}


def test_a_daemon_runs_records_against_a_directory_of_direct_runs(tmp_path):
    """compare_records: every output of every record against its twin of the
    same name; the allow-list explains DATE; a missing twin, a data change
    and a direct product the daemon did not make are each reported."""
    ours, direct = tmp_path / "ours", tmp_path / "direct"
    ours.mkdir(), direct.mkdir()
    sci = np.arange(12.0).reshape(3, 4)
    same = _write(ours / "x_rate.fits", sci)
    _write(direct / "x_rate.fits", sci.copy(), date="2026-01-02")
    changed = _write(ours / "x_cal.fits", sci)
    _write(direct / "x_cal.fits", sci + 1)
    lonely = _write(ours / "x_i2d.fits", sci)
    _write(direct / "x_crf.fits", sci)

    def record(*paths):
        return {"event": {"outputs": [{"path": str(p), "suffix": p.stem.split("_")[1]}
                                      for p in paths]}}

    compared, failures, extra = compare_records(
        {"detector1": [record(same)], "stage2": [record(changed, lonely)], "stage3": []},
        direct)
    assert [(stage, name) for stage, name, _ in compared] == [
        ("detector1", "x_rate.fits"), ("stage2", "x_cal.fits")]
    assert len(failures) == 2
    assert failures[0].startswith("stage2 x_cal.fits:") and "SCI data" in failures[0]
    assert failures[1] == "stage2 x_i2d.fits: no direct twin"
    assert extra == ["x_crf.fits"]

