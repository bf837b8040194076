"""The program modes for stage 3 and streaming: visits, segments, missing and
late exposures, and the plan (jwst association pool, JSON manifest)."""

import json

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.synthetic.asn_pool import COLUMNS
from calstream.steps.synthetic.kit import ALL_MODES, build_kit
from calstream.steps.synthetic.program import ProgramSpec, program_truth
from calstream.steps.synthetic.timeseries import TimeSeriesSpec


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return build_kit(tmp_path_factory.mktemp("plan"), seed=4, modes=ALL_MODES, references=False)


def _header(path):
    return fits.getheader(path, 0)


def test_default_kit_is_unchanged_but_carries_its_plan(tmp_path):
    k = build_kit(tmp_path, ProgramSpec(dithers=2), references=False)
    assert [p.name for p in k.uncal_files] == [
        "jw01234001001_02101_00001_nrcb1_uncal.fits", "jw01234001001_02101_00002_nrcb1_uncal.fits"]
    assert k.missing == [] and k.late == [] and k.delivery_order() == k.uncal_files
    assert k.pool_path.name == "jw01234_20240115t090000_pool.csv"
    assert len(json.loads(k.manifest_path.read_text())["exposures"]) == 2


def test_second_visit_of_observation_1_sees_the_same_stars_elsewhere(kit):
    visit1, visit2 = kit.by_mode["imaging"], kit.by_mode["mosaic"]
    assert [p.name.split("_")[0] for p in visit2] == ["jw01234001002"] * 4
    for path in visit2:
        h = _header(path)
        assert (h["OBSERVTN"], h["VISIT"], h["NEXPOSUR"]) == ("001", "002", 4)
        assert h["VISIT_ID"] == "01234001002"
    first = [fits.getheader(p, "SCI") for p in (visit1[0], visit2[0])]
    assert first[0]["RA_REF"] != first[1]["RA_REF"]
    stars = [program_truth(kit.specs[m], seed=4 + ALL_MODES.index(m)).stars
             for m in ("imaging", "mosaic")]
    assert program_truth(kit.specs["mosaic"], seed=99).stars == stars[0] == stars[1]
    # Its exposure 2 is the late one: delivered after everything else.
    assert kit.late == [visit2[1]]
    assert kit.delivery_order()[-1] == visit2[1]


def test_segmented_time_series_cuts_the_exposure_at_integrations(kit):
    spec = kit.specs["segmented"]
    files = kit.by_mode["segmented"]
    assert [p.name for p in files] == [
        f"jw01234004001_01101_00001-seg00{s}_nrcb1_uncal.fits" for s in (1, 2, 3)]
    ranges = []
    for path in files:
        h = _header(path)
        assert (h["EXSEGTOT"], h["NINTS"], h["TSOVISIT"]) == (3, spec.nints, True)
        ranges.append((h["EXSEGNUM"], h["INTSTART"], h["INTEND"]))
        with fits.open(path) as hdul:
            n = h["INTEND"] - h["INTSTART"] + 1
            assert hdul["SCI"].data.shape[0] == n
            assert list(hdul["INT_TIMES"].data["integration_number"]) == list(
                range(h["INTSTART"], h["INTEND"] + 1))
    assert ranges == [(1, 1, 3), (2, 4, 6), (3, 7, 9)]


def test_segments_together_are_the_unsegmented_exposure(tmp_path):
    from calstream.steps.synthetic.program import simulate_program

    whole = simulate_program(tmp_path / "a", TimeSeriesSpec(nints=5), seed=1)
    parts = simulate_program(tmp_path / "b", TimeSeriesSpec(nints=5, segments=2), seed=1)
    assert TimeSeriesSpec(nints=5, segments=2).segment_integrations() == [(1, 3), (4, 5)]
    joined = np.concatenate([fits.getdata(p, "SCI") for p in parts])
    np.testing.assert_array_equal(joined, fits.getdata(whole[0], "SCI"))


def test_missing_exposure_is_planned_but_never_written(kit):
    files = kit.by_mode["missing"]
    assert [p.name.split("_")[2] for p in files] == ["00001", "00002", "00004"]
    assert all(_header(p)["NEXPOSUR"] == 4 for p in files)
    assert kit.missing == ["jw01234005001_02101_00003_nrcb1"]
    assert not any(p.name.startswith(kit.missing[0]) for p in kit.root.rglob("*.fits"))


def test_spec_rejects_impossible_plans():
    for bad in (dict(missing=(5,)), dict(late=(0,)), dict(missing=(2,), late=(2,)),
                dict(segments=2)):
        with pytest.raises(ValueError):
            ProgramSpec(**bad).validate()


def test_pool_lists_every_planned_file_and_jwst_reads_it(kit):
    from jwst.associations import AssociationPool

    lines = kit.pool_path.read_text().splitlines()
    assert lines[0].split("|") == list(COLUMNS)
    pool = AssociationPool.read(kit.pool_path)
    names = list(pool["filename"])
    written = sorted(p.name for p in kit.uncal_files)
    assert sorted(set(names) - {f"{m}_uncal.fits" for m in kit.missing}) == written
    assert f"{kit.missing[0]}_uncal.fits" in names
    row = pool[names.index(kit.by_mode["segmented"][1].name)]  # jwst reads lower-case text
    assert (row["exp_type"], row["exsegtot"], row["exsegnum"]) == ("nrc_tsimage", "3", "2")
    assert row["asn_candidate"] == "[('o004', 'observation')]"


def test_jwst_generator_makes_the_expected_level3_candidates(kit):
    """jwst's own association generator, on the pool, makes what stage 3 runs here."""
    from jwst.associations.main import Main

    made = Main.cli([str(kit.pool_path), "--all-candidates", "--dry-run"]).associations
    level3 = {(a["asn_type"], a["asn_id"]): sorted(m["expname"] for m in a["products"][0]["members"])
              for a in made if a["asn_type"] in ("image3", "tso3", "spec3")}
    assert level3[("image3", "o001")] == sorted(
        p.name.replace("_uncal", "_cal") for m in ("imaging", "mosaic") for p in kit.by_mode[m])
    assert level3[("tso3", "o004")] == [
        p.name.replace("_uncal", "_calints") for p in kit.by_mode["segmented"]]
    # The missing exposure is in the plan, so in jwst's candidate.
    assert f"{kit.missing[0]}_cal.fits" in level3[("image3", "o005")]
    assert ("spec3", "o003") in level3


def test_manifest_says_which_exposures_are_missing_or_late(kit):
    entries = json.loads(kit.manifest_path.read_text())["exposures"]
    by_id = {e["exposure_id"]: e for e in entries}
    assert by_id[kit.missing[0]]["delivery"] == "missing"
    late = kit.late[0].name.rsplit("_", 1)[0]
    assert by_id[late]["delivery"] == "late"
    assert by_id[late]["candidates"] == ["o001"] and by_id[late]["visit"] == "002"
    seg = by_id["jw01234004001_01101_00001-seg002_nrcb1"]
    assert (seg["segment"], seg["segments"], seg["exp_type"]) == (2, 3, "NRC_TSIMAGE")
    assert len(entries) == len(kit.uncal_files) + len(kit.missing)


def test_image3_never_asks_for_gaia_unless_told(tmp_path):
    # What the hard-coded stage-3 setting did, the embedded default's
    # configuration does now, visibly; nothing in steps/ forces it.
    from calstream.daemon.operations import embedded_default
    from calstream.daemon.operations.config import load
    from calstream.steps.pipeline_settings import settings_for

    asn = {"asn_type": "image3", "products": []}
    embedded = load(embedded_default.write(tmp_path), env={}).step_parameters()
    stage3_settings = lambda pipeline, _asn: embedded.for_run(pipeline)  # noqa: E731
    assert stage3_settings("calwebb_image3", asn) == {"tweakreg": {"abs_refcat": ""}}
    assert stage3_settings("calwebb_tso3", asn) == {}
    assert settings_for("calwebb_image3", asn, None) == {}  # CRDS decides

    mine = settings_for("calwebb_image3", asn, {"tweakreg": {"abs_refcat": "GAIADR3"}})
    assert mine == {"tweakreg": {"abs_refcat": "GAIADR3"}}


def test_a_module_subarray_on_one_detector_is_flagged_as_never_complete(kit, tmp_path):
    # SUB160 is read on all of module B: the one simulated detector cannot
    # complete its visits; the point-source SUB160P can.
    module_b = ["nrcb2", "nrcb3", "nrcb4", "nrcblong"]
    assert kit.unsimulated_detectors() == {
        "jw01234001001": module_b, "jw01234001002": module_b, "jw01234005001": module_b}
    point_source = build_kit(tmp_path, ProgramSpec(subarray="SUB160P", dithers=2),
                             modes=("imaging", "segmented", "lrs"), references=False)
    assert point_source.unsimulated_detectors() == {}


def test_the_manifest_is_a_plan_calstream_loads_the_same_as_the_pool(kit):
    """`calstream simulate` prints the manifest beside the pool as the
    program's plan; `calstream plan load manifest.json` refused it ("not a
    jwst association pool (no FILENAME column in [...)")."""
    from calstream.steps.plans import load_plan

    from_pool, from_manifest = load_plan(kit.pool_path), load_plan(kit.manifest_path)
    assert from_manifest.plan_id == from_pool.plan_id
    assert from_manifest.exposures == from_pool.exposures  # candidates and headers too
    assert any(len(e.candidates) == 2 for e in from_manifest.exposures)  # coronagraphy's c-acid
