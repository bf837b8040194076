"""A failed run's CRDS references checked for wholeness: a broken one makes
the failure the cache's (parked), a whole one leaves it the data's."""

from __future__ import annotations

import os

import asdf
import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.asdf_layout import asdf_problem
from calstream.steps.failures import (
    PERMANENT,
    TRANSIENT,
    after_reference_check,
)
from calstream.steps.reference_integrity import (
    any_changed,
    classify_run_failure,
    references_in_log,
    references_root,
)

CORRUPT = "infrastructure:crds_reference_corrupt"


def test_a_permanent_failure_with_a_broken_reference_is_the_cache_s():
    broken = {"/crds/references/jwst/jwst_nircam_superbias_0001.fits": "cut"}
    assert after_reference_check(PERMANENT, broken) == CORRUPT
    assert after_reference_check(PERMANENT, {}) == PERMANENT
    # What already waits (a retry, a park) or is done (a skip) stays as it is.
    for kind in (TRANSIENT, "skipped", "infrastructure:disk_full"):
        assert after_reference_check(kind, broken) == kind


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "crds"))
    monkeypatch.delenv("CRDS_REFPATH", raising=False)
    refs = tmp_path / "crds" / "references" / "jwst"
    refs.mkdir(parents=True)
    return refs


def _superbias(refs):
    path = refs / "jwst_nircam_superbias_0001.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((160, 160), "f4"), name="SCI"),
                  fits.ImageHDU(np.zeros((160, 160), "u4"), name="DQ")]).writeto(path)
    return path


def _run_log(tmp_path, *references):
    log = tmp_path / "run.log"
    log.write_text("".join(f"INFO stpipe.pipeline: Prefetch for X reference file is '{r}'.\n"
                           for r in references) + "ERROR the run failed\n")
    return str(log)


def test_a_run_failing_on_a_truncated_reference_parks(tmp_path, cache):
    superbias = _superbias(cache)
    log = _run_log(tmp_path, superbias)
    reshape = ValueError("cannot reshape array of size 12960 into shape (160,160)")
    task = {"input_path": str(tmp_path / "jw01234001001_02101_00001_nrcb1_uncal.fits")}
    # With the reference whole, the failure is the data's.
    assert classify_run_failure(reshape, task, log) == PERMANENT
    whole = superbias.read_bytes()
    os.truncate(superbias, len(whole) // 2)  # a sync stopped half-way
    kind, waits_on = classify_run_failure(reshape, task, log)
    assert kind == CORRUPT and list(waits_on) == [str(superbias)]
    # Not checked without the run's log, or for a failure that is not permanent.
    assert classify_run_failure(reshape, task, None) == PERMANENT
    assert classify_run_failure(OSError("EIO"), task, log) == TRANSIENT
    # The parked run is tried again only once the broken file changed.
    assert not any_changed(waits_on)
    part = superbias.with_name("superbias.part")
    part.write_bytes(whole)
    part.rename(superbias)  # synced again
    assert any_changed(waits_on)
    # Gone from the cache since the run: not whole either.
    superbias.unlink()
    kind, waits_on = classify_run_failure(reshape, task, log)
    assert kind == CORRUPT and waits_on == {str(superbias): None}
    assert not any_changed(waits_on)
    part.write_bytes(whole)
    part.rename(superbias)
    assert any_changed(waits_on)


def test_only_files_under_the_references_directory_are_taken_from_the_log(tmp_path, cache):
    inside = cache / "jwst_nircam_gain_0001.fits"
    outside = tmp_path / "elsewhere.fits"
    log = tmp_path / "run.log"
    log.write_text(f"Using GAIN reference file {inside}\n"
                   f"Prefetch for GAIN reference file is '{inside}'.\n"
                   f"a header value naming {cache}/../../../elsewhere.fits and {outside}\n")
    assert references_in_log(log, references_root()) == [inside]


def test_refpath_names_the_references_directory(tmp_path):
    assert references_root({"CRDS_PATH": "/c", "CRDS_REFPATH": "/r"}) == type(tmp_path)("/r")
    assert references_root({"CRDS_PATH": "/c"}) == type(tmp_path)("/c/references")
    assert references_root({}) is None


def _asdf_with_blocks(path):
    asdf.AsdfFile({"a": np.arange(1000.0), "b": np.ones((20, 20)),
                   "description": "data source: 7 files"}).write_to(path)
    return path.read_bytes()


def test_asdf_structure(tmp_path):
    path = tmp_path / "ref.asdf"
    data = _asdf_with_blocks(path)
    assert asdf_problem(path) is None  # "source: 7" in a description is no block
    second = data.index(b"\xd3BLK", data.index(b"\xd3BLK") + 1)
    cuts = {len(data) - 5: None,  # only the optional block index cut: the blocks are whole
            len(data) // 2 + 500: "declares",  # inside a block
            second: "the tree uses 2 blocks but the file holds 1",  # a whole block missing
            200: "no end marker"}  # inside the tree
    for cut, expected in cuts.items():
        path.write_bytes(data[:cut])
        problem = asdf_problem(path)
        assert (problem is None) if expected is None else (expected in problem), (cut, problem)
    path.write_bytes(b"SIMPLE  =  T")
    assert "not an ASDF file" in asdf_problem(path)
    asdf.AsdfFile({"x": 1}).write_to(path)  # no blocks at all
    assert asdf_problem(path) is None
