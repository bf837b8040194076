"""A failed run's CRDS references checked for wholeness: a broken one makes
the failure the cache's (parked), a whole one leaves it the data's."""

from __future__ import annotations

import os
from typing import ClassVar

import asdf
import numpy as np
import pytest
from astropy.io import fits
from jwst.stpipe import Pipeline, Step

from calstream.steps.asdf_layout import asdf_problem
from calstream.steps.failures import (
    PERMANENT,
    TRANSIENT,
    after_reference_check,
)
from calstream.steps.reference_integrity import (
    any_changed,
    classify_run_failure,
    references_of_failure,
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


class _ReadsItsReference(Step):
    """A real jwst step that asks for its reference the way every jwst step
    does (``get_reference_file``), then fails as a cut reference makes it."""

    reference_file_types: ClassVar = ["superbias"]

    def process(self, data):
        self.get_reference_file(data, "superbias")
        raise ValueError("cannot reshape array of size 12960 into shape (160,160)")


class _ReadsNothing(Step):
    reference_file_types: ClassVar = ["gain"]

    def process(self, data):
        raise ValueError("the data's own fault")


class _TwoSteps(Pipeline):
    """The first step fails; the second, whose reference is broken, never runs."""

    step_defs: ClassVar = {"first": _ReadsNothing, "second": _ReadsItsReference}

    def process(self, data):
        return self.second.run(self.first.run(data))


def _failure(step: Step) -> BaseException:
    try:
        step.run("input")
    except ValueError as exc:
        return exc
    raise AssertionError("the step did not fail")


def test_a_run_failing_on_a_truncated_reference_parks(tmp_path, cache):
    superbias = _superbias(cache)
    reshape = _failure(_ReadsItsReference(override_superbias=str(superbias)))
    task = {"input_path": str(tmp_path / "jw01234001001_02101_00001_nrcb1_uncal.fits")}
    # With the reference whole, the failure is the data's.
    assert classify_run_failure(reshape, task) == PERMANENT
    whole = superbias.read_bytes()
    os.truncate(superbias, len(whole) // 2)  # a sync stopped half-way
    kind, waits_on = classify_run_failure(reshape, task)
    assert kind == CORRUPT and list(waits_on) == [str(superbias)]
    # Not checked for a failure that is not permanent, nor one no step raised.
    assert classify_run_failure(OSError("EIO"), task) == TRANSIENT
    assert classify_run_failure(ValueError("cannot reshape"), task) == PERMANENT
    # The parked run is tried again only once the broken file changed.
    assert not any_changed(waits_on)
    part = superbias.with_name("superbias.part")
    part.write_bytes(whole)
    part.rename(superbias)  # synced again
    assert any_changed(waits_on)
    # Gone from the cache since the run: not whole either.
    superbias.unlink()
    kind, waits_on = classify_run_failure(reshape, task)
    assert kind == CORRUPT and waits_on == {str(superbias): None}
    assert not any_changed(waits_on)
    part.write_bytes(whole)
    part.rename(superbias)
    assert any_changed(waits_on)


def test_a_broken_reference_of_a_step_that_never_ran_leaves_the_failure_the_data_s(
        tmp_path, cache):
    superbias = _superbias(cache)
    os.truncate(superbias, superbias.stat().st_size // 2)
    pipeline = _TwoSteps(steps={"second": {"override_superbias": str(superbias)}})
    failure = _failure(pipeline)
    assert references_of_failure(failure, references_root()) == []
    assert classify_run_failure(failure, {"input_path": str(tmp_path / "in.fits")}) == PERMANENT


def test_only_files_under_the_references_directory_are_taken(tmp_path, cache):
    inside = cache / "jwst_nircam_gain_0001.fits"
    outside = tmp_path / "elsewhere.fits"
    outside.write_bytes(b"an override of the operator's")
    failure = _failure(_ReadsItsReference(override_superbias=str(outside)))
    assert references_of_failure(failure, references_root()) == []
    failure = _failure(_ReadsItsReference(
        override_superbias=f"{cache}/../../../elsewhere.fits"))
    assert references_of_failure(failure, references_root()) == []
    # What an OSError of the failure names: stpipe's prefetch opening a reference.
    unreadable = PermissionError(13, "Permission denied", str(inside))
    assert references_of_failure(unreadable, references_root()) == [inside]
    assert references_of_failure(OSError(9, "Bad file descriptor", 7), references_root()) == []
    # A type crds answers N/A for (or overridden N/A): no file.
    failure = _failure(_ReadsItsReference(override_superbias="N/A"))
    assert references_of_failure(failure, references_root()) == []


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
