"""Level-3 candidates, product names, association JSON, jwst's schema."""

import json

import pytest
from jwst.associations import load_asn

from calstream.steps.associations import (
    AssociationInvalid,
    Exposure,
    Level3Error,
    association_filename,
    build_level3,
    candidate_key,
    product_name,
    validate_level3,
)
from calstream.steps.associations.filenames import LEVEL3_ASN_TYPES
from calstream.steps.associations.level3 import ASN_TYPES
from calstream.steps.routing import route
from calstream.steps.synthetic.headers import exposure_id, synthetic_header

STORE = "/store/jw01234"


def exposure(instrument, exp_type, variant="default", suffixes=("cal", "calints", "x1d"), **kw):
    header = synthetic_header(instrument, exp_type, variant, **kw)
    eid = exposure_id(header)
    return Exposure(eid, header, {s: f"{STORE}/{eid}_{s}.fits" for s in suffixes})


def check(asn):
    validate_level3(asn)
    loaded = load_asn(json.dumps(asn))
    assert loaded["products"][0]["name"] == asn["products"][0]["name"]
    name = association_filename(asn)
    assert name.startswith(f"jw{asn['program']}-{asn['asn_id']}_{asn['version_id']}_{asn['asn_type']}_")
    assert name.endswith("_asn.json")
    return asn


def members(asn):
    return [(m["expname"].rsplit("/", 1)[-1], m["exptype"]) for m in asn["products"][0]["members"]]


def build(ms, **kw):
    return check(build_level3(route(ms[0].header), ms, **kw))


def dithers(n=4, **kw):
    return [exposure("NIRCAM", "NRC_IMAGE", EXPOSURE=f"{i:05d}", PATT_NUM=i,
                     PATTTYPE="4-POINT-DITHER", NUMDTHPT=n, NEXPOSUR=n, **kw)
            for i in range(1, n + 1)]


def test_dithered_imaging_makes_one_image3_with_every_dither():
    ds = dithers(SUBARRAY="SUB160")
    keys = {candidate_key(route(d.header), d) for d in ds}
    assert len(keys) == 1
    asn = build(ds, asn_dir=STORE)
    assert (asn["asn_type"], asn["asn_rule"], asn["asn_id"]) == ("image3", "Asn_Lv3Image", "o001")
    # PUPIL=CLEAR is a value jwst keeps (not in dms_base._EMPTY); sorted with the filter.
    assert asn["products"][0]["name"] == "jw01234-o001_t001_nircam_clear-f150w-sub160"
    assert members(asn) == [(f"{d.exposure_id}_cal.fits", "science") for d in ds]
    assert asn["products"][0]["members"][0]["expname"] == f"{ds[0].exposure_id}_cal.fits"
    assert asn["target"] == "1" and asn["version_id"] == "20260526t120000"


def test_full_frame_has_no_subarray_and_detectors_combine():
    sw = [exposure("NIRCAM", "NRC_IMAGE", DETECTOR=d) for d in ("NRCB1", "NRCB2", "NRCB3", "NRCB4")]
    lw = exposure("NIRCAM", "NRC_IMAGE", DETECTOR="NRCBLONG", CHANNEL="LONG", FILTER="F444W")
    assert len({candidate_key(route(e.header), e) for e in sw}) == 1
    assert candidate_key(route(lw.header), lw) != candidate_key(route(sw[0].header), sw[0])
    assert build(sw)["products"][0]["name"] == "jw01234-o001_t001_nircam_clear-f150w"
    assert build([lw])["products"][0]["name"] == "jw01234-o001_t001_nircam_clear-f444w"
    with pytest.raises(Level3Error, match="different level-3 candidates"):
        build_level3(route(lw.header), [*sw, lw])


def test_grouping_splits_observation_target_filter_and_tso():
    base = exposure("MIRI", "MIR_IMAGE")
    k = candidate_key(route(base.header), base)
    for kw in ({"OBSERVTN": "002"}, {"TARGETID": 2}, {"FILTER": "F1500W"}, {"PROGRAM": "04321"}):
        other = exposure("MIRI", "MIR_IMAGE", **kw)
        assert candidate_key(route(other.header), other) != k, kw
    tso = exposure("MIRI", "MIR_IMAGE", "tso")
    assert candidate_key(route(tso.header), tso).asn_type == "tso3"
    assert k.asn_type == "image3" and k.acid == "o001"
    assert product_name(k) == "jw01234-o001_t001_miri_f770w"


def test_segmented_time_series_makes_one_tso3_of_calints():
    segs = [exposure("NIRCAM", "NRC_TSGRISM", EXSEGNUM=s, EXSEGTOT=3) for s in (1, 2, 3)]
    assert len({candidate_key(route(e.header), e) for e in segs}) == 1
    asn = build(segs)
    assert (asn["asn_type"], asn["asn_rule"]) == ("tso3", "Asn_Lv3TSO")
    assert [m for m, _ in members(asn)] == [
        f"jw01234001001_02101_00001-seg00{s}_nrcalong_calints.fits" for s in (1, 2, 3)
    ]
    assert {t for _, t in members(asn)} == {"science"}
    assert asn["products"][0]["name"] == "jw01234-o001_t001_nircam_f444w-grismr-subgrism64"


def test_nirspec_bots_name_keeps_the_slit():
    e = exposure("NIRSPEC", "NRS_BRIGHTOBJ")
    assert build([e])["products"][0]["name"] == (
        "jw01234-o001_t001_nirspec_f290lp-g395h-s1600a1-sub2048"
    )


def test_lrs_nods_make_one_spec3():
    nods = [exposure("MIRI", "MIR_LRS-FIXEDSLIT", EXPOSURE=f"{i:05d}", PATT_NUM=i)
            for i in (1, 2)]
    asn = build(nods)
    assert (asn["asn_type"], asn["asn_rule"]) == ("spec3", "Asn_Lv3SpectralTarget")
    assert asn["products"][0]["name"] == "jw01234-o001_t001_miri_p750l"
    assert members(asn) == [(f"{n.exposure_id}_cal.fits", "science") for n in nods] + [
        (f"{n.exposure_id}_x1d.fits", "background") for n in nods
    ]


def test_coronagraphy_takes_psf_members_as_calints():
    sci = exposure("NIRCAM", "NRC_CORON")
    psf = exposure("NIRCAM", "NRC_CORON", "psf", OBSERVTN="002", TARGETID=7)
    with pytest.raises(Level3Error, match="PSF"):
        build_level3(route(sci.header), [sci])
    # The PSF reference is another observation: only a plan's c-candidate joins them.
    assert candidate_key(route(psf.header), psf) != candidate_key(route(sci.header), sci)
    k_sci = candidate_key(route(sci.header), sci, acid="c1001")
    assert candidate_key(route(psf.header), psf, acid="c1001") == k_sci
    asn = build([psf, sci], acid="c1001")
    assert (asn["asn_type"], asn["asn_rule"], asn["asn_id"]) == ("coron3", "Asn_Lv3NRCCoron", "c1001")
    assert members(asn) == [(f"{sci.exposure_id}_calints.fits", "science"),
                            (f"{psf.exposure_id}_calints.fits", "psf")]
    # Target from the science member, not the PSF star.
    assert asn["products"][0]["name"] == "jw01234-c1001_t001_nircam_f335m-maskrnd-sub320a335r"


def test_ami_needs_psf_and_uses_calints():
    sci = exposure("NIRISS", "NIS_AMI")
    psf = exposure("NIRISS", "NIS_AMI", IS_PSF=True, EXPOSURE="00002")
    asn = build([sci, psf])
    assert asn["asn_type"] == "ami3"
    assert members(asn)[1] == (f"{psf.exposure_id}_calints.fits", "psf")
    assert asn["products"][0]["name"] == "jw01234-o001_t001_niriss_f480m-nrm-sub80"


def test_full_frame_coronagraphy_second_pass_is_image3_of_cal():
    a2 = exposure("NIRCAM", "NRC_CORON", "fullframe")
    a1 = exposure("NIRCAM", "NRC_CORON", "fullframe_unocculted")
    image_pass = route(a2.header).also
    assert image_pass is not None and image_pass.stage3 == "calwebb_image3"
    asn = check(build_level3(image_pass, [a2, a1]))
    assert asn["asn_rule"] == "Asn_Lv3NRCCoronImage"
    assert asn["products"][0]["name"] == "jw01234-o001_t001_nircam_f210m-maskrnd-image3"
    assert {m.rsplit("_", 1)[-1] for m, _ in members(asn)} == {"cal.fits"}


def test_background_target_makes_its_own_image3_of_science_members():
    bkg = exposure("NIRCAM", "NRC_IMAGE", "background", OBSERVTN="002")
    key = candidate_key(route(bkg.header), bkg)
    assert key.aux and key.asn_rule == "Asn_Lv3ImageBackground"
    assert members(build([bkg])) == [(f"{bkg.exposure_id}_cal.fits", "science")]


def test_spectral_background_joins_science_under_a_plan_as_x1d():
    sci = exposure("MIRI", "MIR_MRS")
    bkg = exposure("MIRI", "MIR_MRS", "background", OBSERVTN="002", TARGETID=9)
    asn = build([sci, bkg], acid="c1002")
    assert asn["asn_rule"] == "Asn_Lv3MIRMRS"
    assert members(asn) == [(f"{sci.exposure_id}_cal.fits", "science"),
                            (f"{bkg.exposure_id}_x1d.fits", "background")]
    assert asn["products"][0]["name"] == "jw01234-c1002_t001_miri"  # MRS: no optical elements


def test_names_of_other_modes():
    fs = exposure("NIRSPEC", "NRS_FIXEDSLIT")
    assert product_name(candidate_key(route(fs.header), fs)) == (
        "jw01234-o001_t001-{source_id}_nirspec_f290lp-g395m-{slit_name}-subs200a1"
    )
    mos = exposure("NIRSPEC", "NRS_MSASPEC")
    assert product_name(candidate_key(route(mos.header), mos)) == (
        "jw01234-o001_{source_id}_nirspec_clear-prism"
    )
    ifu = exposure("NIRSPEC", "NRS_IFU")
    assert product_name(candidate_key(route(ifu.header), ifu)) == "jw01234-o001_t001_nirspec_g395h"
    wfss = exposure("NIRISS", "NIS_WFSS")
    assert product_name(candidate_key(route(wfss.header), wfss)) == (
        "jw01234-o001_t001_niriss_f150w-gr150r"
    )
    wfsc = exposure("NIRCAM", "NRC_IMAGE", "wfsc_pair")
    assert product_name(candidate_key(route(wfsc.header), wfsc)) == (
        "jw01234-o001_t001_nircam_clear-f150w-nrcb1_{suffix}-01"
    )
    fgs = exposure("FGS", "FGS_IMAGE")
    assert product_name(candidate_key(route(fgs.header), fgs)) == "jw01234-o001_t001_fgs_clear"


def test_names_match_jwst_product_name_logic():
    """Our names against jwst's own _dms_product_name on a stub association."""
    from jwst.associations.lib.rules_level3_base import DMS_Level3_Base

    class Found:
        def __init__(self, values):
            self.found_values = values

    class Stub:
        def __init__(self, h, acid):
            self.data = {"program": h["PROGRAM"]}
            self.acid = type("A", (), {"id": acid})()
            opt2 = h.get("PUPIL") or h.get("GRATING")
            self.constraints = {
                "instrument": Found([h["INSTRUME"].lower()]),
                "opt_elem": Found([h["FILTER"].lower()]),
                "opt_elem2": Found([opt2.lower()] if opt2 else []),
                "subarray": Found([h["SUBARRAY"].lower()]),
            }
            self._target = str(h["TARGETID"])

        get_instrument = DMS_Level3_Base.get_instrument
        get_opt_element = DMS_Level3_Base.get_opt_element
        get_subarray = DMS_Level3_Base.get_subarray

        def get_slit_name(self):
            return ""

        def get_exposure(self):
            return ""

        def get_target(self):
            return f"t{self._target:0>3s}"

    for instrument, exp_type, variant in [
        ("NIRCAM", "NRC_IMAGE", "default"), ("NIRCAM", "NRC_TSIMAGE", "default"),
        ("NIRISS", "NIS_IMAGE", "default"), ("MIRI", "MIR_IMAGE", "default"),
        ("MIRI", "MIR_4QPM", "default"), ("NIRCAM", "NRC_CORON", "default"),
        ("NIRISS", "NIS_SOSS", "default"), ("MIRI", "MIR_LRS-SLITLESS", "default"),
    ]:
        e = exposure(instrument, exp_type, variant, IS_PSF=False)
        key = candidate_key(route(e.header), e)
        ours = product_name(key, [e])
        theirs = DMS_Level3_Base._dms_product_name(Stub(e.header, key.acid))
        assert ours == theirs, (exp_type, ours, theirs)


def test_unfit_exposures_have_no_candidate():
    for args in [("NIRSPEC", "NRS_IFU", "imprint"), ("NIRCAM", "NRC_TACQ", "default"),
                 ("NIRCAM", "NRC_TSIMAGE", "single_integration")]:
        e = exposure(*args)
        with pytest.raises(Level3Error):
            candidate_key(route(e.header), e)


def test_missing_product_and_degraded_status():
    ds = dithers(3)
    no_cal = Exposure(ds[0].exposure_id, ds[0].header, {"rate": "x_rate.fits"})
    with pytest.raises(Level3Error, match="no cal product"):
        build_level3(route(ds[1].header), [no_cal, ds[1]])
    asn = build(ds[1:], degraded="exposure 00001 of 3 never arrived")
    assert asn["degraded_status"] == "Degraded: exposure 00001 of 3 never arrived"
    # A rebuild names the same file; a new version_id names a new one.
    assert association_filename(build(ds[1:])) == association_filename(asn)
    newer = build(ds, version_id="20260527t000000")
    assert association_filename(newer) != association_filename(asn)


def test_validation_reports_clear_errors():
    asn = build(dithers(2))
    validate_level3(asn)
    with pytest.raises(AssociationInvalid, match="level-3 schema"):
        validate_level3({**asn, "products": "nope"})
    bad = json.loads(json.dumps(asn))
    bad["asn_type"] = "image2"
    bad["products"][0]["members"][0]["exptype"] = "bogus"
    bad["products"][0]["members"][1]["expname"] = "jw01234001001_02101_00002_nrcb1_rate.fits"
    bad["products"][0]["name"] = "Jw1234_thing"
    with pytest.raises(AssociationInvalid) as err:
        validate_level3(bad)
    text = str(err.value)
    for fragment in ("not a level-3 type", "unknown member type", "not a cal or calints",
                     "level-3 product name"):
        assert fragment in text
    coron = json.loads(json.dumps(asn))
    coron["asn_type"] = "coron3"
    with pytest.raises(AssociationInvalid, match="psf"):
        validate_level3(coron)


def test_asn_types_agree_with_filenames():
    assert frozenset(ASN_TYPES.values()) == LEVEL3_ASN_TYPES


def test_wfsc_line_of_sight_jitter_enters_no_wfs_image3():
    # Asn_Lv3WFSCMB's not_los_jitter: a pool's DMS_NOTE keeps them out.
    jitter = exposure("NIRCAM", "NRC_IMAGE", "wfsc_pair", DMS_NOTE="wfsc_los_jitter")
    with pytest.raises(Level3Error, match="wfsc_los_jitter"):
        candidate_key(route(jitter.header), jitter)
