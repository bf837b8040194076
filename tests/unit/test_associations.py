"""Level-2b associations from headers and product paths: companions, waiting,
degraded builds, jwst's schema and load_asn, deterministic names."""

import json
import re
import subprocess
import sys

import pytest
from jwst.associations import load_asn

from calstream.steps.associations.filenames import association_filename, version_stamp
from calstream.steps.associations.level2 import (
    DEGRADED_STATUS_OK,
    AssociationError,
    MissingCompanions,
    build_level2,
)
from calstream.steps.associations.matching import companion_kind, gather_companions, nod_positions
from calstream.steps.associations.records import Exposure, Level3Product
from calstream.steps.associations.validation import AssociationInvalid, validate_level2
from calstream.steps.routing import route
from calstream.steps.synthetic.headers import exposure_id, synthetic_header

STORE = "/store/jw01234"
NAME = re.compile(r"jw\d{5}-o\d{3}_\d{8}t\d{6}_[a-z0-9-]+_\d{5}_asn\.json")


def missing_companions(science_route, science, seen, **kwargs) -> list[str]:
    """The companion kinds stage 2 must still wait for (empty: build now)."""
    return list(gather_companions(science_route, science, seen, **kwargs).missing)


def exposure(instrument, exp_type, variant="default", suffixes=None, **keywords):
    header = synthetic_header(instrument, exp_type, variant, **keywords)
    eid = exposure_id(header)
    suffixes = suffixes or (route(header).stage2_input or "rate",)
    return Exposure(eid, header, {s: f"{STORE}/{eid}_{s}.fits" for s in suffixes})


def direct_image(instrument, exp_type, name, ready=("i2d", "cat", "segm"), **keywords):
    header = synthetic_header(instrument, exp_type, **keywords)
    files = {"i2d": f"{name}_i2d.fits", "cat": f"{name}_cat.ecsv", "segm": f"{name}_segm.fits"}
    return Level3Product(name, header, {s: f"{STORE}/{files[s]}" for s in ready})


def members(asn):
    return [(m["expname"].rsplit("/", 1)[-1], m["exptype"]) for m in asn["products"][0]["members"]]


def check(asn):
    """What every association built here must pass: our checks, jwst's loader."""
    validate_level2(asn)
    loaded = load_asn(json.dumps(asn))
    assert loaded["products"][0]["name"] == asn["products"][0]["name"]
    assert NAME.fullmatch(association_filename(asn))
    return asn


def build(science, seen=(), **kwargs):
    kwargs.setdefault("asn_dir", STORE)  # written next to the products, as stage 2 does
    return check(build_level2(route(science.header), science, seen, **kwargs))


def test_imaging_science_needs_nothing_and_builds_at_once():
    sci = exposure("NIRCAM", "NRC_IMAGE")
    assert missing_companions(route(sci.header), sci, []) == []
    asn = build(sci)
    assert members(asn) == [(f"{sci.exposure_id}_rate.fits", "science")]
    assert (asn["asn_type"], asn["asn_rule"], asn["asn_id"]) == ("image2", "Asn_Lv2Image", "o001")
    assert asn["products"][0]["name"] == sci.exposure_id
    assert asn["degraded_status"] == DEGRADED_STATUS_OK
    assert asn["program"] == "01234" and asn["version_id"] == "20260526t120000"


def test_background_target_joins_and_is_awaited_only_when_announced():
    sci = exposure("MIRI", "MIR_IMAGE")
    bkg = exposure("MIRI", "MIR_IMAGE", "background", OBSERVTN="002", EXPOSURE="00003")
    other_filter = exposure("MIRI", "MIR_IMAGE", "background", OBSERVTN="002",
                            EXPOSURE="00004", FILTER="F1500W")
    r = route(sci.header)
    assert missing_companions(r, sci, [], expected=["background"]) == ["background"]
    assert missing_companions(r, sci, [bkg], expected=["background"]) == []
    assert companion_kind(r, sci, bkg) == "background"
    assert companion_kind(r, sci, other_filter) is None
    asn = build(sci, [bkg, other_filter])
    assert members(asn)[1:] == [(f"{bkg.exposure_id}_rate.fits", "background")]
    # the background itself is calibrated alone
    assert members(build(bkg, [sci])) == [(f"{bkg.exposure_id}_rate.fits", "science")]


def test_imprint_matches_tile_and_dither_point():
    sci = exposure("NIRSPEC", "NRS_IFU", DITHPTIN=2, PATT_NUM=2, EXPOSURE="00002")
    imprints = [
        exposure("NIRSPEC", "NRS_IFU", "imprint", DITHPTIN=d, PATT_NUM=d, EXPOSURE=f"0001{d}")
        for d in (1, 2)
    ]
    other_tile = exposure("NIRSPEC", "NRS_IFU", "imprint", MOSTILNO=2, DITHPTIN=2,
                          EXPOSURE="00020")
    r = route(sci.header)
    assert missing_companions(r, sci, []) == ["imprint"]
    assert missing_companions(r, sci, [], visit_complete=True) == []
    assert companion_kind(r, sci, other_tile) is None
    asn = build(sci, [*imprints, other_tile])
    assert members(asn)[1:] == [(f"{imprints[1].exposure_id}_rate.fits", "imprint")]
    assert asn["asn_rule"] == "Asn_Lv2Spec"


def test_two_point_nod_each_is_science_once():
    nod1 = exposure("NIRSPEC", "NRS_IFU", "nod", PATT_NUM=1)
    nod2 = exposure("NIRSPEC", "NRS_IFU", "nod", PATT_NUM=2, EXPOSURE="00002")
    imprint = exposure("NIRSPEC", "NRS_IFU", "imprint", EXPOSURE="00009")
    r = route(nod1.header)
    assert missing_companions(r, nod1, [imprint]) == ["nod"]
    with pytest.raises(MissingCompanions, match="nod position"):
        build_level2(r, nod1, [imprint])
    seen = [nod1, nod2, imprint]
    first, second = build(nod1, seen), build(nod2, seen)
    assert members(first) == [
        (f"{nod1.exposure_id}_rate.fits", "science"),
        (f"{nod2.exposure_id}_rate.fits", "background"),
        (f"{imprint.exposure_id}_rate.fits", "imprint"),
    ]
    assert members(second)[:2] == [
        (f"{nod2.exposure_id}_rate.fits", "science"),
        (f"{nod1.exposure_id}_rate.fits", "background"),
    ]
    assert first["asn_rule"] == "Asn_Lv2NRSIFUNod"
    assert association_filename(first) != association_filename(second)


def test_fixed_slit_nods_skip_positions_sharing_the_primary_point():
    sci = exposure("NIRSPEC", "NRS_FIXEDSLIT", "nod", NUMDTHPT=6, SUBPXPTS=2, PATT_NUM=3)
    assert nod_positions(sci) == {1, 2, 5, 6}  # 3 and 4 are the same primary point
    wide = exposure("NIRSPEC", "NRS_FIXEDSLIT", "nod", FXD_SLIT="S1600A1", SUBARRAY="SUB2048",
                    NUMDTHPT=5, PATT_NUM=3)
    assert nod_positions(wide) == {1, 5}  # the wide slit's neighbours overlap


def test_wfss_takes_the_direct_image_stage3_products():
    sci = exposure("NIRISS", "NIS_WFSS")
    name = "jw01234-o001_t001_niriss_clear-f150w"
    half = direct_image("NIRISS", "NIS_IMAGE", name, ready=("i2d", "segm"))
    other_pupil = direct_image("NIRISS", "NIS_IMAGE", "jw01234-o001_t001_niriss_clear-f200w",
                               PUPIL="F200W")
    ready = direct_image("NIRISS", "NIS_IMAGE", name)
    r = route(sci.header)
    assert missing_companions(r, sci, [half, other_pupil]) == ["direct_image"]
    assert companion_kind(r, sci, other_pupil) is None
    assert companion_kind(r, sci, ready) == "direct_image"
    asn = build(sci, [other_pupil, ready])
    assert members(asn)[1:] == [
        (f"{name}_i2d.fits", "direct_image"),
        (f"{name}_cat.ecsv", "sourcecat"),
        (f"{name}_segm.fits", "segmap"),
    ]
    assert asn["asn_rule"] == "Asn_Lv2WFSSNIS"


@pytest.mark.parametrize(
    ("instrument", "grism", "image", "name"),
    [
        ("NIRCAM", "NRC_WFSS", "NRC_IMAGE", "jw01234-o001_t001_nircam_clear-f444w"),
        ("MIRI", "MIR_WFSS", "MIR_IMAGE", "jw01234-o001_t001_miri_f560w"),
    ],
)
def test_nircam_and_miri_wfss_direct_images(instrument, grism, image, name):
    sci = exposure(instrument, grism)
    keywords = {"FILTER": "F444W", "PUPIL": "CLEAR"} if instrument == "NIRCAM" else {
        "FILTER": "F560W"}
    direct = direct_image(instrument, image, name, **keywords)
    asn = build(sci, [direct])
    assert [t for _, t in members(asn)] == ["science", "direct_image", "sourcecat", "segmap"]
    wrong_obs = direct_image(instrument, image, name, OBSERVTN="007", **keywords)
    assert missing_companions(route(sci.header), sci, [wrong_obs]) == ["direct_image"]


def test_miri_lrs_takes_its_ta_confirmation():
    ta = exposure("MIRI", "MIR_TACONFIRM")  # exposure 00001, before the science
    sci = exposure("MIRI", "MIR_LRS-FIXEDSLIT", "no_nod")
    r = route(sci.header)
    assert missing_companions(r, sci, []) == ["target_acquisition"]
    assert missing_companions(r, sci, [], visit_complete=True) == []
    assert companion_kind(r, sci, ta) == "target_acquisition"
    asn = build(sci, [ta])
    assert members(asn)[1:] == [(f"{ta.exposure_id}_rate.fits", "target_acquisition")]
    tso = exposure("MIRI", "MIR_LRS-SLITLESS")
    tso_asn = build(tso, [ta])
    assert members(tso_asn) == [(f"{tso.exposure_id}_rateints.fits", "science"),
                                (f"{ta.exposure_id}_rate.fits", "target_acquisition")]
    assert tso_asn["asn_type"] == "spec2"  # jwst's LRS rule, even for time series


def test_miri_lrs_nod_with_ta():
    ta = exposure("MIRI", "MIR_TACONFIRM")
    nod1 = exposure("MIRI", "MIR_LRS-FIXEDSLIT", PATT_NUM=1)
    nod2 = exposure("MIRI", "MIR_LRS-FIXEDSLIT", PATT_NUM=2, EXPOSURE="00003")
    asn = build(nod1, [ta, nod2])
    assert [t for _, t in members(asn)] == ["science", "background", "target_acquisition"]
    assert asn["asn_rule"] == "Asn_Lv2MIRLRSFixedSlitNod"


def test_time_series_members_are_rateints():
    for variant in ("default", "dhs"):
        sci = exposure("NIRCAM", "NRC_TSGRISM", variant)
        asn = build(sci)
        assert members(asn) == [(f"{sci.exposure_id}_rateints.fits", "science")]
        assert asn["asn_type"] == "tso-spec2"


def test_degraded_when_the_wait_is_over():
    nod1 = exposure("NIRSPEC", "NRS_FIXEDSLIT", "nod", PATT_NUM=1)
    r = route(nod1.header)
    with pytest.raises(MissingCompanions) as info:
        build_level2(r, nod1, [])
    assert info.value.missing.keys() == {"nod"}
    asn = build(nod1, [], allow_degraded=True)
    assert asn["degraded_status"] != DEGRADED_STATUS_OK
    assert "nod position(s) 2, 3 of 3" in asn["degraded_status"]
    assert members(asn) == [(f"{nod1.exposure_id}_rate.fits", "science")]


def test_schema_and_invariants_are_enforced():
    asn = build(exposure("NIRCAM", "NRC_IMAGE"))
    broken = json.loads(json.dumps(asn))
    del broken["products"][0]["members"][0]["exptype"]
    with pytest.raises(AssociationInvalid, match="jwst level-2b schema.*exptype"):
        validate_level2(broken)
    twice = json.loads(json.dumps(asn))
    twice["products"][0]["members"].append({"expname": "x_rate.fits", "exptype": "science"})
    with pytest.raises(AssociationInvalid, match="exactly one science member"):
        validate_level2(twice)
    renamed = {**asn, "products": [{**asn["products"][0], "name": "elsewhere"}]}
    with pytest.raises(AssociationInvalid, match="should be 'jw01234001001_02101_00001_nrcb1'"):
        validate_level2(renamed)
    with pytest.raises(AssociationInvalid, match="one product"):
        validate_level2({**asn, "products": []})


def test_names_are_deterministic():
    sci = exposure("NIRCAM", "NRC_IMAGE")
    a, b = build(sci), build(sci)
    assert a == b and association_filename(a) == association_filename(b)
    assert association_filename(a) == "jw01234-o001_20260526t120000_image2_06000_asn.json"
    later = exposure("NIRCAM", "NRC_IMAGE", EXPOSURE="00002", **{"TIME-OBS": "12:05:00.5"})
    assert association_filename(build(later)) == (
        "jw01234-o001_20260526t120500_image2_06000_asn.json")
    other_detector = exposure("NIRCAM", "NRC_IMAGE", DETECTOR="NRCB2")
    assert association_filename(build(other_detector)).endswith("_image2_07000_asn.json")
    segment = exposure("NIRCAM", "NRC_TSGRISM", EXSEGNUM=3)
    assert association_filename(build(segment)).endswith("_tso-spec2_05003_asn.json")
    coron = exposure("NIRCAM", "NRC_CORON", "fullframe", suffixes=("rate", "rateints"))
    passes = route(coron.header).passes
    names = [association_filename(build_level2(p, coron)) for p in passes]
    assert names[0] != names[1] and names[1].endswith("_image2_52000_asn.json")
    assert version_stamp({"DATE-OBS": "2026-05-26T01:02:03.4"}) == "20260526t010203"


def test_members_relative_to_the_association_directory():
    sci = exposure("NIRCAM", "NRC_IMAGE")
    relative = build_level2(route(sci.header), sci, asn_dir=STORE)
    assert relative["products"][0]["members"][0]["expname"] == f"{sci.exposure_id}_rate.fits"
    elsewhere = build_level2(route(sci.header), sci, asn_dir="/tmp/asn")
    assert elsewhere["products"][0]["members"][0]["expname"] == sci.products["rate"]
    validate_level2(elsewhere)


def test_what_cannot_be_built_says_why():
    dark = exposure("NIRCAM", "NRC_DARK", suffixes=("rate",))
    with pytest.raises(AssociationError, match="no stage 2 .calwebb_dark"):
        build_level2(route(dark.header), dark)
    tso = exposure("NIRCAM", "NRC_TSIMAGE", suffixes=("rate",))
    with pytest.raises(AssociationError, match="no rateints product yet"):
        build_level2(route(tso.header), tso)


def test_the_planner_can_build_and_check_without_importing_jwst():
    code = (
        "import sys\n"
        "import calstream.steps.associations, calstream.steps.routing\n"
        "from calstream.steps.associations.validation import level2_schema\n"
        "level2_schema()\n"
        "assert 'jwst' not in sys.modules, 'jwst imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
