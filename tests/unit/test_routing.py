"""The routing table, from headers alone: every exposure type of the notes,
the build-12.3 modes, the TSO rule, and the exposures it must refuse."""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from calstream.steps.routing import (
    EXP_TYPES,
    PIPELINE_CLASSES,
    ROUTES,
    Route,
    RoutingError,
    markdown_table,
    route,
)
from calstream.steps.synthetic.headers import CASES, synthetic_header

I2, S2 = "calwebb_image2", "calwebb_spec2"
STAGE3 = {
    "I3": "calwebb_image3", "S3": "calwebb_spec3", "T3": "calwebb_tso3",
    "C3": "calwebb_coron3", "A3": "calwebb_ami3", "W3": "calwebb_wfs-image3",
}
OTHER = {"D1": "detector1_only", "DARK": "calwebb_dark", "GUIDER": "calwebb_guider"}

# One line an expectation: mode, stage 2, stage-2 input, stage 3 or other
# path, "tso" when a time series, companions it needs ("-": none); then the
# synthetic header cases that must route so.
_EXPECTED_TABLE = """
nircam_image                     I2  rate      I3      -    background                     : nrc_image-default
nircam_image                     I2  rate      I3      -    -                              : nrc_image-background
nircam_image_tso                 I2  rateints  T3      tso  -                              : nrc_image-tso
nircam_image_tso                 I2  rate      -       -    -                              : nrc_image-tso_single_integration
wfsc_image                       I2  rate      -       -    -                              : nrc_image-wfsc fgs_image-wfsc
wfsc_image_pair                  I2  rate      W3      -    -                              : nrc_image-wfsc_pair nis_image-wfsc_pair
nircam_tsimage                   I2  rateints  T3      tso  -                              : nrc_tsimage-default
nircam_tsimage                   I2  rate      -       -    -                              : nrc_tsimage-single_integration
nircam_coron                     I2  rateints  C3      -    background                     : nrc_coron-default nrc_coron-psf
nircam_coron_fullframe           I2  rateints  C3      -    background                     : nrc_coron-fullframe
nircam_coron_unocculted          I2  rate      I3      -    background                     : nrc_coron-fullframe_unocculted
nircam_coron_fullframe_longwave  I2  rateints  C3      -    background                     : nrc_coron-fullframe_longwave
nircam_wfss                      S2  rate      S3      -    direct_image                   : nrc_wfss-default
nircam_tsgrism                   S2  rateints  T3      tso  -                              : nrc_tsgrism-default
nircam_tsgrism                   S2  rate      -       -    -                              : nrc_tsgrism-single_integration
nircam_tsgrism_clear             -   -         D1      tso  -                              : nrc_tsgrism-clear
nircam_tsgrism_nrcblong          -   -         D1      tso  -                              : nrc_tsgrism-nrcblong
nircam_dhs                       S2  rateints  -       tso  -                              : nrc_tsgrism-dhs nrc_tsgrism-dhs60
nircam_dhs                       S2  rate      -       -    -                              : nrc_tsgrism-dhs_single_integration
nircam_dhs_longwave              S2  rateints  -       tso  -                              : nrc_tsgrism-dhs_longwave
nircam_nonscience_image          I2  rate      -       -    -                              : nrc_tacq-default nrc_tacq-tso_visit nrc_taconfirm-default nrc_focus-default
nircam_dark                      -   -         DARK    -    -                              : nrc_dark-default
nircam_detector1_only            -   -         D1      -    -                              : nrc_flat-default nrc_led-default nrc_grism-default nrc_wfsc-default
niriss_image                     I2  rate      I3      -    background                     : nis_image-default
niriss_image_tso                 I2  rateints  T3      tso  -                              : nis_image-tso
niriss_ami                       I2  rateints  A3      -    background                     : nis_ami-default
niriss_wfss                      S2  rate      S3      -    direct_image                   : nis_wfss-default
niriss_soss_tso                  S2  rateints  T3      tso  -                              : nis_soss-default
niriss_soss_tso                  S2  rate      -       -    -                              : nis_soss-single_integration
niriss_soss_f277w_tso            -   -         D1      tso  -                              : nis_soss-f277w nis_soss-multistripe_f277w
niriss_soss_patterned            S2  rate      -       -    background                     : nis_soss-not_tso
niriss_soss                      S2  rate      S3      -    background                     : nis_soss-not_tso_no_pattern
niriss_soss_multistripe          S2  rateints  T3      tso  -                              : nis_soss-multistripe nis_soss-superstripe
niriss_soss_multistripe          S2  rate      -       -    -                              : nis_soss-multistripe_single_integration
niriss_nonscience_image          I2  rate      -       -    -                              : nis_tacq-default nis_taconfirm-default nis_focus-default
niriss_dark                      -   -         DARK    -    -                              : nis_dark-default
niriss_detector1_only            -   -         D1      -    -                              : nis_lamp-default nis_extcal-default
nirspec_fs                       S2  rate      S3      -    background                     : nrs_fixedslit-default
nirspec_fs_nod                   S2  rate      S3      -    nod,background                 : nrs_fixedslit-nod
nirspec_fs                       S2  rate      S3      -    -                              : nrs_fixedslit-background
nirspec_fs_dark_detector         -   -         D1      -    -                              : nrs_fixedslit-dark_detector
nirspec_opaque                   -   -         D1      -    -                              : nrs_fixedslit-opaque
nirspec_ifu                      S2  rate      S3      -    imprint,background             : nrs_ifu-default
nirspec_ifu_nod                  S2  rate      S3      -    nod,imprint                    : nrs_ifu-nod
nirspec_ifu                      S2  rate      S3      -    -                              : nrs_ifu-imprint
nirspec_ifu                      S2  rate      S3      -    imprint                        : nrs_ifu-background
nirspec_ifu_dark_detector        -   -         D1      -    -                              : nrs_ifu-dark_detector
nirspec_mos                      S2  rate      S3      -    imprint                        : nrs_msaspec-default
nirspec_mos_nod                  S2  rate      S3      -    nod,imprint                    : nrs_msaspec-nod
nirspec_mos_no_metafile          -   -         D1      -    -                              : nrs_msaspec-no_metafile
nirspec_msa_image                I2  rate      -       -    -                              : nrs_msaspec-msa_image
nirspec_bots                     S2  rateints  T3      tso  -                              : nrs_brightobj-default
nirspec_bots                     S2  rate      -       -    -                              : nrs_brightobj-single_integration
nirspec_bots_dark_detector       -   -         D1      tso  -                              : nrs_brightobj-dark_detector
nirspec_lamp                     S2  rate      -       -    -                              : nrs_autowave-default nrs_autoflat-default nrs_lamp-default
nirspec_lamp_image               I2  rate      -       -    -                              : nrs_lamp-mirror
nirspec_lamp_unusable            -   -         D1      -    -                              : nrs_lamp-nolamp
nirspec_lamp_dark_detector       -   -         D1      -    -                              : nrs_autowave-dark_detector
nirspec_nonscience_image         I2  rate      -       -    -                              : nrs_image-default nrs_focus-default nrs_tacq-default nrs_taconfirm-default nrs_confirm-default nrs_wata-default nrs_msata-default nrs_taslit-default nrs_verify-default
nirspec_mimf                     I2  rate      I3      -    background                     : nrs_mimf-default
nirspec_dark                     -   -         DARK    -    -                              : nrs_dark-default
miri_image                       I2  rate      I3      -    background                     : mir_image-default
miri_image                       I2  rate      I3      -    -                              : mir_image-background
miri_image_tso                   I2  rateints  T3      tso  -                              : mir_image-tso
miri_image_tso                   I2  rate      -       -    -                              : mir_image-tso_single_integration
miri_lrs_fixedslit_nod           S2  rate      S3      -    nod,target_acquisition         : mir_lrs-fixedslit-default
miri_lrs_fixedslit               S2  rate      -       -    target_acquisition,background  : mir_lrs-fixedslit-no_nod
miri_lrs_fixedslit_background    S2  rate      S3      -    -                              : mir_lrs-fixedslit-background
miri_lrs_fixedslit_tso           S2  rateints  T3      tso  target_acquisition             : mir_lrs-fixedslit-tso
miri_lrs_slitless_tso            S2  rateints  T3      tso  target_acquisition             : mir_lrs-slitless-default
miri_lrs_slitless                S2  rate      -       -    target_acquisition,background  : mir_lrs-slitless-not_tso
miri_lrs_slitless_tso            S2  rate      -       -    target_acquisition             : mir_lrs-slitless-single_integration
miri_mrs                         S2  rate      S3      -    background                     : mir_mrs-default
miri_mrs_tso                     S2  rateints  -       tso  -                              : mir_mrs-tso
miri_mrs                         S2  rate      S3      -    -                              : mir_mrs-background
miri_wfss                        S2  rate      S3      -    direct_image                   : mir_wfss-default
miri_coron                       I2  rateints  C3      -    background                     : mir_lyot-default mir_4qpm-default
miri_nonscience_image            I2  rate      -       -    -                              : mir_tacq-default mir_taconfirm-default mir_coroncal-default
miri_dark                        -   -         DARK    -    -                              : mir_darkall-default mir_darkimg-default mir_darkmrs-default
miri_detector1_only              -   -         D1      -    -                              : mir_flatimage-default mir_flatimage-ext-default mir_flatmrs-default mir_flatmrs-ext-default
fgs_image                        I2  rate      I3      -    -                              : fgs_image-default
fgs_focus                        I2  rate      -       -    -                              : fgs_focus-default
fgs_dark                         -   -         DARK    -    -                              : fgs_dark-default
fgs_detector1_only               -   -         D1      -    -                              : fgs_skyflat-default fgs_intflat-default
fgs_guider                       -   -         GUIDER  -    -                              : fgs_id-image-default fgs_id-stack-default fgs_acq1-default fgs_acq2-default fgs_track-default fgs_fineguide-default
"""


def _expectations(line: str) -> dict[str, tuple]:
    fields, _, case_ids = line.partition(":")
    mode, stage2, stage2_input, after, tso, needs = fields.split()
    expected = (mode, None if stage2 == "-" else stage2,
                None if stage2_input == "-" else stage2_input,
                None if after == "-" else after, tso == "tso",
                () if needs == "-" else tuple(needs.split(",")))
    return dict.fromkeys(case_ids.split(), expected)


# case id -> (mode, stage 2, stage-2 input, stage 3 or other path, is_tso, needs)
EXPECTED = {k: v for line in _EXPECTED_TABLE.strip().splitlines()
            for k, v in _expectations(line).items()}

# Every EXP_TYPE the routing note's table names (shared/notes/jwst-routing-and-associations.md).
NOTE_EXP_TYPES = """
NRC_IMAGE NRC_TSIMAGE NRC_CORON NRC_WFSS NRC_TSGRISM NRC_TACQ NRC_TACONFIRM NRC_FOCUS
NRC_DARK NRC_FLAT NRC_LED NRC_GRISM
NIS_IMAGE NIS_AMI NIS_WFSS NIS_SOSS NIS_TACQ NIS_TACONFIRM NIS_FOCUS NIS_DARK NIS_LAMP NIS_EXTCAL
NRS_FIXEDSLIT NRS_IFU NRS_MSASPEC NRS_BRIGHTOBJ NRS_AUTOWAVE NRS_AUTOFLAT NRS_LAMP NRS_IMAGE
NRS_WATA NRS_MSATA NRS_TACONFIRM NRS_CONFIRM NRS_FOCUS NRS_MIMF
MIR_IMAGE MIR_LRS-FIXEDSLIT MIR_LRS-SLITLESS MIR_MRS MIR_WFSS MIR_LYOT MIR_4QPM MIR_TACQ
MIR_TACONFIRM MIR_CORONCAL MIR_DARKALL MIR_DARKIMG MIR_DARKMRS MIR_FLATIMAGE MIR_FLATMRS
FGS_IMAGE FGS_FOCUS FGS_SKYFLAT FGS_INTFLAT FGS_DARK FGS_ID-IMAGE FGS_ID-STACK FGS_ACQ1 FGS_ACQ2
FGS_TRACK FGS_FINEGUIDE
""".split()


@pytest.mark.parametrize("case_id", sorted(EXPECTED))
def test_case_routes_as_expected(case_id):
    mode, stage2, stage2_input, after, is_tso, needs = EXPECTED[case_id]
    r = route(CASES[case_id].header())
    assert r.mode == mode
    assert r.stage2 == {"I2": I2, "S2": S2, None: None}[stage2]
    assert r.stage2_input == stage2_input
    if stage2:
        assert r.stage3 == STAGE3.get(after) and r.other is None
    else:
        assert r.other == OTHER[after] and r.stage3 is None
    assert r.is_tso is is_tso
    assert r.needs == needs
    assert r.reason.startswith(f"{r.instrument} {r.exp_type}")


def test_every_case_has_an_expectation_and_every_row_a_case():
    assert set(EXPECTED) == set(CASES)
    produced = set()
    for case in CASES.values():
        produced |= {p.mode for p in route(case.header()).passes}
    rows = {r.mode for r in ROUTES} | {r.also.mode for r in ROUTES if r.also}
    assert len({r.mode for r in ROUTES}) == len(ROUTES), "row modes must be unique"
    assert rows - produced == set()


def test_every_exposure_type_is_routed():
    cased = {c.exp_type for c in CASES.values()}
    assert set(NOTE_EXP_TYPES) <= cased
    assert set().union(*EXP_TYPES.values()) <= cased
    assert {e for r in ROUTES for e in r.exp_types} == set().union(*EXP_TYPES.values())


def test_exposure_types_match_stdatamodels():
    spec = find_spec("stdatamodels")
    core = Path(spec.submodule_search_locations[0]) / "jwst/datamodels/schemas/core.schema.yaml"
    schema = yaml.safe_load(core.read_text())
    enum = schema["properties"]["meta"]["properties"]["exposure"]["properties"]["type"]["enum"]
    assert set(enum) - {"N/A", "ANY"} == set().union(*EXP_TYPES.values())


def test_the_brief_dhs_example():
    r = route({"INSTRUME": "NIRCAM", "EXP_TYPE": "NRC_TSGRISM", "TSOVISIT": True, "NINTS": 50,
               "SUBARRAY": "SUB41STRIPE1_DHS", "PUPIL": "GDHS0"})
    assert (r.mode, r.stage2, r.stage2_input, r.stage3, r.is_tso) == (
        "nircam_dhs", S2, "rateints", None, True)
    assert r.asn_type == "tso-spec2" and "tso3" in r.reason


def test_soss_multistripe_goes_to_tso3_and_dhs_does_not():
    for subarray in ("SUB17STRIPE_SOSS", "SUB60STRIPE_SOSS", "SUB204STRIPE_SOSS",
                     "SUB680STRIPE_SOSS"):
        r = route(synthetic_header("NIRISS", "NIS_SOSS", SUBARRAY=subarray))
        assert (r.mode, r.stage3, r.stage2_input) == (
            "niriss_soss_multistripe", "calwebb_tso3", "rateints")
    for subarray in ("SUB41STRIPE1_DHS", "SUB82STRIPE2_DHS", "SUB164STRIPE4_DHS",
                     "SUB260STRIPE4_DHS"):
        r = route(synthetic_header("NIRCAM", "NRC_TSGRISM", "dhs", SUBARRAY=subarray))
        assert r.mode == "nircam_dhs" and r.stage3 is None


def test_miri_wfss_takes_a_mir_image_direct_image():
    r = route(synthetic_header("MIRI", "MIR_WFSS"))
    assert (r.stage2, r.stage3, r.needs, r.asn_rule) == (
        S2, "calwebb_spec3", ("direct_image",), "Asn_Lv2WFSSMIR")


# --- the TSO rule: TSOVISIT or an always-TSO EXP_TYPE, and NINTS >= 2

@pytest.mark.parametrize(
    ("instrument", "exp_type", "tsovisit", "nints", "is_tso"),
    [
        ("MIRI", "MIR_IMAGE", True, 2, True),
        ("MIRI", "MIR_IMAGE", True, 1, False),
        ("MIRI", "MIR_IMAGE", False, 50, False),
        ("NIRCAM", "NRC_TSIMAGE", False, 50, True),  # always TSO, whatever TSOVISIT says
        ("NIRCAM", "NRC_TSIMAGE", True, 1, False),
        ("NIRCAM", "NRC_TSGRISM", False, 2, True),
        ("NIRSPEC", "NRS_BRIGHTOBJ", False, 9, True),
        ("NIRSPEC", "NRS_BRIGHTOBJ", True, 1, False),
        ("NIRISS", "NIS_SOSS", True, 2, True),
        ("NIRISS", "NIS_SOSS", False, 300, False),
        ("MIRI", "MIR_LRS-SLITLESS", "T", "100", True),  # FITS/JSON spellings
        ("MIRI", "MIR_LRS-SLITLESS", "F", "100", False),
        ("NIRCAM", "NRC_TACQ", True, 5, False),  # target acquisitions are never TSO
    ],
)
def test_tso_rule(instrument, exp_type, tsovisit, nints, is_tso):
    r = route(synthetic_header(instrument, exp_type, TSOVISIT=tsovisit, NINTS=nints))
    assert r.is_tso is is_tso
    if r.stage2:
        assert r.stage2_input == ("rateints" if is_tso else "rate")
        assert r.asn_type.startswith("tso-") == (is_tso and not r.exp_type.startswith("MIR_LRS"))


def test_single_integration_time_series_feeds_no_stage3():
    r = route(synthetic_header("NIRCAM", "NRC_TSGRISM", NINTS=1))
    assert (r.stage2_input, r.stage3, r.asn_type) == ("rate", None, "spec2")
    assert "NINTS=1" in r.reason


def test_soss_tso3_exceptions():
    f277w = route(synthetic_header("NIRISS", "NIS_SOSS", FILTER="F277W"))
    assert f277w.other == "detector1_only" and f277w.stage2 is None  # jwst: no level 2b
    one = route(synthetic_header("NIRISS", "NIS_SOSS", NINTS=1))
    assert one.stage2 == S2 and one.stage3 is None
    not_tso = route(synthetic_header("NIRISS", "NIS_SOSS", TSOVISIT=False, FILTER="F277W",
                                     PATTTYPE=None))
    assert not_tso.stage3 == "calwebb_spec3"  # outside TSO jwst calibrates F277W


def test_coronagraphy_and_ami_use_rateints():
    for instrument, exp_type in (("NIRCAM", "NRC_CORON"), ("MIRI", "MIR_LYOT"),
                                 ("MIRI", "MIR_4QPM"), ("NIRISS", "NIS_AMI")):
        r = route(synthetic_header(instrument, exp_type))
        assert r.stage2_input == "rateints" and not r.is_tso


def test_full_frame_nircam_coronagraphy_has_a_second_rate_pass():
    r = route(CASES["nrc_coron-fullframe"].header())
    assert [(p.stage2_input, p.stage3, p.asn_rule) for p in r.passes] == [
        ("rateints", "calwebb_coron3", "Asn_Lv2Image"),
        ("rate", "calwebb_image3", "Asn_Lv2CoronAsRate"),
    ]
    lw = route(CASES["nrc_coron-fullframe_longwave"].header())
    assert lw.also.stage3 is None  # coronagraphic image3 is short-wave only
    assert route(CASES["nrc_coron-default"].header()).also is None


def test_special_members_are_calibrated_alone():
    assert route(CASES["nrs_ifu-imprint"].header()).needs == ()
    assert route(CASES["nrs_ifu-background"].header()).needs == ("imprint",)
    bkg = route(CASES["mir_mrs-background"].header())
    assert (bkg.role, bkg.needs, bkg.stage2) == ("background", (), S2)
    assert route(CASES["nrc_coron-psf"].header()).role == "psf"


def test_wfsc_needs_the_pattern_for_wfs_image3():
    assert route(CASES["nrc_image-wfsc_pair"].header()).stage3 == "calwebb_wfs-image3"
    assert route(CASES["nrc_image-wfsc"].header()).stage3 is None
    assert route(CASES["nrc_image-default"].header(PATTTYPE="WFSC")).stage3 == "calwebb_image3"


def test_route_of_a_json_round_tripped_header():
    header = json.loads(json.dumps(CASES["nrs_brightobj-default"].header(NINTS="500",
                                                                         TSOVISIT="T")))
    assert route(header).is_tso


def test_pipeline_names_are_jwst_aliases():
    r = route(synthetic_header("NIRSPEC", "NRS_LAMP"))
    assert (r.stage2, r.asn_type) == (S2, "nrslamp-spec2")
    assert r.stage2_class == "jwst.pipeline.Spec2Pipeline"
    for rule in ROUTES:
        for name in (rule.stage2, rule.stage3):
            assert name is None or name in PIPELINE_CLASSES


def test_markdown_table_lists_every_row():
    table = markdown_table()
    for rule in ROUTES:
        assert f"| {rule.mode} |" in table
    assert isinstance(route(synthetic_header("FGS", "FGS_IMAGE")), Route)


# --- refusals: a reason an operator can act on, never a KeyError

@pytest.mark.parametrize(
    ("header", "words"),
    [
        ({"EXP_TYPE": "NRC_IMAGE"}, ["INSTRUME is missing"]),
        ({"INSTRUME": "NIRCAM"}, ["EXP_TYPE is missing"]),
        ({"INSTRUME": "NIRCAM", "EXP_TYPE": "  "}, ["EXP_TYPE is missing"]),
        ({"INSTRUME": "HUBBLE", "EXP_TYPE": "NRC_IMAGE"}, ["INSTRUME=HUBBLE", "not a JWST"]),
        ({"INSTRUME": "NIRCAM", "EXP_TYPE": "NRC_SELFIE"}, ["NRC_SELFIE", "not a known"]),
        ({"INSTRUME": "MIRI", "EXP_TYPE": "NRC_IMAGE"}, ["NIRCAM exposure type", "INSTRUME=MIRI"]),
        (synthetic_header("MIRI", "MIR_IMAGE", DETECTOR="NRS1"), ["DETECTOR=NRS1", "not a MIRI"]),
        (synthetic_header("NIRCAM", "NRC_TSGRISM", "dhs", SUBARRAY="SUBGRISM64"),
         ["PUPIL=GDHS0", "DHS stripe subarray", "SUBARRAY=SUBGRISM64"]),
        (synthetic_header("NIRCAM", "NRC_TSGRISM", "dhs", SUBARRAY=None),
         ["DHS", "SUBARRAY=missing"]),
        (synthetic_header("NIRCAM", "NRC_TSGRISM", "dhs", PUPIL="CLEAR"),
         ["SUBARRAY=SUB41STRIPE1_DHS", "needs a DHS pupil", "PUPIL=CLEAR"]),
        (synthetic_header("NIRCAM", "NRC_TSGRISM", "dhs", PUPIL=None), ["PUPIL=missing"]),
        (synthetic_header("NIRCAM", "NRC_TSGRISM", PUPIL="GDHS60", SUBARRAY="SUB41STRIPE1_DHS"),
         ["short-wave DHS pupil", "NRCALONG"]),
        (synthetic_header("MIRI", "MIR_WFSS", FILTER="F770W"), ["P750L", "FILTER=F770W"]),
        (synthetic_header("NIRCAM", "NRC_WFSS", PUPIL="CLEAR"), ["GRISMR/GRISMC"]),
        (synthetic_header("NIRISS", "NIS_WFSS", FILTER="F150W"), ["GR150R/GR150C"]),
        (synthetic_header("NIRISS", "NIS_SOSS", PUPIL="CLEARP"), ["GR700XD"]),
        (synthetic_header("MIRI", "MIR_IMAGE", TSOVISIT="maybe"), ["TSOVISIT", "neither true"]),
        (synthetic_header("MIRI", "MIR_IMAGE", NINTS="many"), ["NINTS", "not an integer"]),
        (synthetic_header("MIRI", "MIR_IMAGE", NINTS=0), ["NINTS=0"]),
    ],
)
def test_unknown_or_contradictory_exposures_are_refused(header, words):
    with pytest.raises(RoutingError) as info:
        route(header)
    for word in words:
        assert word in str(info.value)


# --- the table as data --------------------------------------------------------

_GOOD_ROW = '''
[[route]]
mode = "nircam_image"
exp_types = ["NRC_IMAGE"]
stage2 = "calwebb_image2"
'''


def test_the_shipped_table_is_what_routes():
    from importlib.resources import files

    from calstream.steps.routing_table import TABLE, parse_routes

    text = files("calstream.steps").joinpath(TABLE).read_text(encoding="utf-8")
    assert parse_routes(text) == ROUTES


@pytest.mark.parametrize("change, words", [
    ('stage3 = "calwebb_image4"', "stage3 = 'calwebb_image4' is not one of"),
    ('colour = "blue"', "unknown column(s) ['colour']"),
    ('when = ["SOMETIMES"]', "condition 'SOMETIMES' is neither KEY=VALUE nor one of"),
    ('needs = ["sky"]', "needs ['sky']"),
    ('also = "nowhere"', "also = 'nowhere' is no [[second_pass]] row"),
    ('other = "calwebb_dark"', "either a stage2 or another path"),
])
def test_a_bad_row_fails_the_load_and_says_where(change, words):
    from calstream.steps.routing_table import RoutingTableError, parse_routes

    with pytest.raises(RoutingTableError, match="nircam_image") as err:
        parse_routes(_GOOD_ROW + change + "\n")
    assert words in str(err.value)


def test_a_table_that_leaves_an_exposure_type_unrouted_fails_the_load():
    from calstream.steps.routing_table import RoutingTableError, parse_routes

    with pytest.raises(RoutingTableError, match="the last row for it must have no condition"):
        parse_routes(_GOOD_ROW)  # every other EXP_TYPE has no row
    with pytest.raises(RoutingTableError, match="unknown table"):
        parse_routes("[[routes]]\nmode = 'x'\n")
    with pytest.raises(RoutingTableError, match="not TOML"):
        parse_routes("[[route]\n")


# --- NIRSpec lamp exposures: jwst's own optical-path check decides ------------

# MIRROR too: an autoflat or autowave through the mirror makes no association in
# jwst (not_invalid_optical_path), and an MSA one got an nrslamp-spec2 here.
_LAMP_GRATINGS = ("PRISM", "G140M", "G140H", "G235M", "G235H", "G395M", "G395H", "MIRROR")
_LAMPS = ("LINE1", "LINE2", "LINE3", "LINE4", "FLAT1", "FLAT2", "FLAT3", "FLAT4", "FLAT5",
          "REF", "TEST")


def _jwst_makes_nrslamp_spec2(header: dict) -> bool:
    """What jwst 3.0's Asn_Lv2NRSLAMPSpectral (rules_level2b.py) takes: an
    opaque filter, a lamp lit, an opmode other than grating-only (MSA with
    its metafile), and dms_base.nrslamp_valid_detector: the grating and lamp
    put light on this detector."""
    from jwst.associations.lib.dms_base import nrslamp_valid_detector

    item = {k.lower(): str(v).lower() for k, v in header.items() if v is not None}
    return (item.get("filter") == "opaque" and item.get("lamp", "nolamp") != "nolamp"
            and item.get("grating") != "mirror" and item.get("opmode") != "grating-only"
            and (item.get("opmode") != "msaspec" or "msametfl" in item)
            and nrslamp_valid_detector(item))


@pytest.mark.parametrize("exp_type", ["NRS_AUTOWAVE", "NRS_AUTOFLAT", "NRS_LAMP"])
@pytest.mark.parametrize("opmode", ["IFU", "FIXEDSLIT", "MSASPEC"])
def test_lamp_exposures_get_nrslamp_spec2_where_jwst_makes_one(exp_type, opmode):
    # An IFU lamp through a medium-resolution grating or the prism lights NRS1
    # only; a fixed-slit lamp lights only the lines and flats of its grating.
    # jwst makes no association for the rest; an order for them would fail.
    pytest.importorskip("jwst")
    wrong = []
    for grating in _LAMP_GRATINGS:
        for lamp in _LAMPS:
            for detector in ("NRS1", "NRS2"):
                header = synthetic_header(
                    "NIRSPEC", exp_type, OPMODE=opmode, GRATING=grating, LAMP=lamp,
                    DETECTOR=detector, FILTER="OPAQUE",
                    MSAMETFL="jw01234001001_01_msa.fits" if opmode == "MSASPEC" else None)
                ours = route(header).asn_type == "nrslamp-spec2"
                if ours != _jwst_makes_nrslamp_spec2(header):
                    wrong.append((grating, lamp, detector, ours))
    assert wrong == []


def test_an_ifu_autowave_on_the_dark_detector_is_detector1_only():
    r = route(CASES["nrs_autowave-dark_detector"].header())
    assert (r.mode, r.stage2, r.other) == ("nirspec_lamp_dark_detector", None, "detector1_only")


# --- against asn_generate itself, on a pool written from the headers ---------


def _jwst_level3_rules(headers: list[dict], tmp_path) -> set[str]:
    """The level-3 rules asn_generate fires on a pool of ``headers`` (one row
    each, the keywords as a DMS pool writes them: lower case, T/F flags)."""
    pytest.importorskip("jwst")
    from jwst.associations import AssociationPool
    from jwst.associations.main import Main

    from calstream.steps.synthetic.headers import exposure_id

    rows = []
    for h in headers:
        row = {k.lower(): ("t" if v else "f") if isinstance(v, bool) else str(v)
               for k, v in h.items()}
        row.update(filename=f"{exposure_id(h)}_uncal.fits", program=str(int(h["PROGRAM"])),
                   asn_candidate=f"[('o{h['OBSERVTN']}', 'observation')]", pntgtype="science",
                   targname="T1", mostilno="1", dithptin="1", expspcin="1")
        rows.append(row)
    columns = sorted(set().union(*rows))
    pool = tmp_path / "pool.csv"
    pool.write_text("\n".join(["|".join(columns)] + [
        "|".join(r.get(c, "null") for c in columns) for r in rows]) + "\n")
    generated = Main.cli(["--dry-run"], pool=AssociationPool.read(str(pool))).associations
    return {a["asn_rule"].split("_", 1)[1] for a in generated if a["asn_type"] == "spec3"}


@pytest.mark.parametrize("pattern", ["NONE", "CYCLING", None])
def test_soss_outside_a_time_series_feeds_spec3_only_as_jwst_does(pattern, tmp_path):
    # jwst's Asn_Lv3SlitlessSpectral (rules_level3.py) takes NIS_SOSS only
    # without a PATTTYPE: a pool's "NONE" (DMS writes it for undithered
    # exposures) is a value, and such an exposure makes no spec3.
    headers = [synthetic_header("NIRISS", "NIS_SOSS", "not_tso", EXPOSURE=f"{i:05d}",
                                PATT_NUM=i, NEXPOSUR=2, PATTTYPE=pattern) for i in (1, 2)]
    jwst_spec3 = _jwst_level3_rules(headers, tmp_path)
    for h in headers:
        r = route(h)
        assert (r.stage2, r.stage2_input) == (S2, "rate")
        assert (r.stage3 == "calwebb_spec3") == bool(jwst_spec3), (pattern, jwst_spec3)


@pytest.mark.parametrize("case", [
    "nrs_fixedslit-default", "mir_lrs-fixedslit-no_nod", "mir_lrs-fixedslit-default",
    "nrs_msaspec-default", "nis_soss-not_tso_no_pattern", "mir_lrs-slitless-not_tso",
    "nis_wfss-default", "nrc_wfss-default", "mir_wfss-default",
])
def test_a_background_target_makes_its_own_spec3_only_where_jwst_does(case, tmp_path):
    # jwst's Asn_Lv3SpecAux (rules_level3.py, allowed_bkgdtarg) combines
    # background targets of NRS_FIXEDSLIT and MIR_LRS-FIXEDSLIT (nodded or
    # not); IFU and MRS have rules of their own; no other spectral mode's
    # background target gets a spec3 of its own.
    from calstream.daemon.deciders.level3_candidates import keys_of
    from calstream.steps.associations import Exposure
    from calstream.steps.synthetic.headers import exposure_id

    header = CASES[case].header(BKGDTARG=True)
    ours = {k.asn_rule for k, _ in keys_of(Exposure(exposure_id(header), header))}
    assert ours == _jwst_level3_rules([header], tmp_path), case


def _jwst_level2_rule(header: dict, tmp_path) -> str | None:
    """The rule of the level-2 association asn_generate makes with this
    exposure as its science member, on a pool of it alone."""
    pytest.importorskip("jwst")
    from jwst.associations import AssociationPool
    from jwst.associations.main import Main

    from calstream.steps.synthetic.headers import exposure_id

    row = {k.lower(): ("t" if v else "f") if isinstance(v, bool) else str(v)
           for k, v in header.items()}
    row.update(filename=f"{exposure_id(header)}_uncal.fits", program=str(int(header["PROGRAM"])),
               asn_candidate=f"[('o{header['OBSERVTN']}', 'observation')]", pntgtype="science",
               targname="T1", mostilno="1", dithptin="1", expspcin="1")
    pool = tmp_path / "pool.csv"
    pool.write_text("|".join(row) + "\n" + "|".join(row.values()) + "\n")
    rules = {a["asn_rule"].split("_", 1)[1]
             for a in Main.cli(["--dry-run"], pool=AssociationPool.read(str(pool))).associations
             if "2" in a["asn_type"]}
    assert len(rules) <= 1, rules
    return rules.pop() if rules else None


@pytest.mark.parametrize("case, special", [
    ("nrs_fixedslit-default", {"BKGDTARG": True}), ("nrs_msaspec-default", {"BKGDTARG": True}),
    ("mir_lrs-fixedslit-no_nod", {"BKGDTARG": True}), ("nis_wfss-default", {"BKGDTARG": True}),
    ("mir_mrs-default", {"BKGDTARG": True}), ("nrc_image-default", {"BKGDTARG": True}),
    ("nrs_ifu-default", {"IS_IMPRT": True}), ("nrs_msaspec-default", {"IS_IMPRT": True}),
    ("nrs_ifu-nod", {"IS_IMPRT": True}),
])
def test_special_members_calibrated_alone_name_jwsts_rule(case, special, tmp_path):
    # A background target or an imprint calibrated alone: jwst makes its
    # association with Asn_Lv2SpecSpecial / Asn_Lv2ImageSpecial /
    # Asn_Lv2SpecImprint, and the association's asn_rule says so.
    header = CASES[case].header(**special)
    assert route(header).asn_rule == _jwst_level2_rule(header, tmp_path)
