"""A level-3 run's references are looked up for every science member before
it starts, not only for its first (stpipe's prefetch): a member whose own
reference the cache lacks parks the run at once, before any step.

Real crds on a private copy of the session kit's cache, real jwst pipeline
classes. The second member is observed after a new APCORR's USEAFTER (an
image3 step's reference type); that file is not in the cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

from calstream.steps.association_run import run_association
from calstream.steps.crds_env import refresh_crds
from calstream.steps.environment import environ
from calstream.steps.failures import classify_failure
from calstream.steps.member_references import configured, prefetch_members

pytestmark = [pytest.mark.integration]

LATER = "jwst_nircam_apcorr_0099.fits"  # named by the rules, never synced


def _cache_with_a_later_apcorr(kit, tmp_path: Path) -> dict[str, str]:
    from crds.core.rmap import Mapping

    cache = tmp_path / "crds"
    shutil.copytree(kit.crds_env["CRDS_PATH"], cache)
    # The kit's context's own rmap: other tests of the session add contexts
    # (and their rmaps) to the kit's cache.
    import crds
    with environ({**kit.crds_env, "CRDS_PATH": str(cache)}):
        name = crds.get_cached_mapping(kit.context).get_imap("nircam").get_rmap("apcorr").filename
    (rmap,) = cache.rglob(name)
    text = rmap.read_text()
    first = "'2022-01-01 00:00:00' : 'jwst_nircam_apcorr_0001.fits',"
    assert first in text
    rmap.write_text(text.replace(first, f"{first}\n        '2030-01-01 00:00:00' : '{LATER}',"))
    Mapping.from_file(str(rmap), ignore_checksum=True).write(str(rmap))
    return {**kit.crds_env, "CRDS_PATH": str(cache)}


def _members(kit, tmp_path: Path, dates: list[str]) -> list[Path]:
    """Copies of one exposure observed on ``dates``."""
    members = []
    for n, date in enumerate(dates):
        path = tmp_path / f"member{n}_cal.fits"
        shutil.copyfile(kit.uncal_files[0], path)
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["DATE-OBS"] = date
        members.append(path)
    return members


def _association(members: list[Path]) -> dict:
    return {"asn_type": "image3", "asn_rule": "candidate_Asn_Lv3Image", "asn_id": "c1000",
            "program": "01234", "asn_pool": "pool",
            "products": [{"name": "jw01234-c1000_t001_nircam_clear-f200w",
                          "members": [{"expname": str(m), "exptype": "science"}
                                      for m in members]}]}


def test_a_later_member_s_missing_reference_parks_the_run_before_it_starts(tmp_path, kit):
    env = _cache_with_a_later_apcorr(kit, tmp_path)
    members = _members(kit, tmp_path, ["2025-03-01", "2031-01-01"])
    out = tmp_path / "out"
    with environ(env):
        refresh_crds(force=True)
        try:
            with pytest.raises(Exception) as raised:
                run_association("calwebb_image3", _association(members), "asn.json", str(out))
        finally:
            refresh_crds(force=True)
    # crds's own answer for a file its serverless cache lacks: CRDS's fault, parked.
    assert classify_failure(raised.value) == "infrastructure:crds_unreachable", raised.value
    # Raised by the look-up for the second member, not by a step of the run.
    assert any(entry.name == "prefetch_members" for entry in raised.traceback)
    # Before any step: nothing written beside the association.
    assert sorted(p.name for p in out.iterdir()) == ["asn.json"]


def test_members_alike_cost_one_lookup_a_date_span_two(tmp_path, kit):
    from jwst.pipeline import Image3Pipeline

    members = _members(kit, tmp_path, ["2025-03-01"] * 5 + ["2025-03-02"] * 5)
    run_path = tmp_path / "asn.json"
    with environ(kit.crds_env):
        refresh_crds(force=True)
        run_path.write_text(json.dumps(_association(members[:5])))
        pipeline = configured(Image3Pipeline, str(run_path), {})
        assert prefetch_members(pipeline, str(run_path)) == 1
        run_path.write_text(json.dumps(_association(members)))
        assert prefetch_members(pipeline, str(run_path)) == 2
        run_path.write_text(json.dumps(_association(members[:1])))
        assert prefetch_members(pipeline, str(run_path)) == 0  # stpipe's own prefetch
