"""The "coron" kit mode: names, headers, and a plan jwst's own generator reads
into the coronagraphy association coron3 runs."""

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.routing import route
from calstream.steps.synthetic import coronagraphy as coron
from calstream.steps.synthetic.coronagraphy import CoronSpec
from calstream.steps.synthetic.kit import build_kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return build_kit(tmp_path_factory.mktemp("coron"), seed=5, modes=("coron",),
                     references=False)


def test_science_then_psf_reference_in_their_own_observations(kit):
    science, psf = kit.by_mode["coron"]
    assert (science.name, psf.name) == ("jw01234008001_01101_00001_nrcalong_uncal.fits",
                                        "jw01234009001_01101_00001_nrcalong_uncal.fits")
    for path, is_psf, nints in ((science, False, 3), (psf, True, 4)):
        h = fits.getheader(path, 0)
        assert (h["EXP_TYPE"], h["DETECTOR"], h["SUBARRAY"]) == ("NRC_CORON", "NRCALONG",
                                                                 "SUB320A335R")
        assert (h["FILTER"], h["PUPIL"], h["CORONMSK"]) == ("F335M", "MASKRND", "MASKA335R")
        assert (h["IS_PSF"], h["NINTS"]) == (is_psf, nints)
        r = route(dict(h))
        assert (r.stage2_input, r.stage3, r.role) == (
            "rateints", "calwebb_coron3", "psf" if is_psf else "science")
        assert fits.getdata(path, "SCI").shape == (nints, 5, 320, 320)


def test_the_occulter_dims_the_star_not_the_companion():
    spec = CoronSpec()
    truth = coron.coron_truth(spec)
    rate = coron.rate_image(spec, psf=False)
    x, y = (round(v) for v in truth.star_xy)
    # Unocculted, these 3 x 3 pixels would hold over half of the star.
    assert rate[y - 1 : y + 2, x - 1 : x + 2].sum() < 0.02 * spec.star_flux
    assert truth.companion_rate > 0.9 * spec.companion_flux
    cx, cy = (round(v) for v in truth.companion_xy)
    assert rate[cy, cx] > 5 * np.median(rate)


def test_jwst_generator_makes_the_coron3_candidate(kit):
    from jwst.associations.main import Main

    spec = kit.specs["coron"]
    made = Main.cli([str(kit.pool_path), "--all-candidates", "--dry-run"]).associations
    [asn] = [a for a in made if a["asn_type"] == "coron3"]
    assert (asn["asn_rule"], asn["asn_id"]) == ("candidate_Asn_Lv3NRCCoron", spec.candidate)
    science, psf = kit.by_mode["coron"]
    assert sorted((m["expname"], m["exptype"]) for m in asn["products"][0]["members"]) == [
        (science.name.replace("_uncal", "_calints"), "science"),
        (psf.name.replace("_uncal", "_calints"), "psf"),
    ]


def test_level2_rules_agree_with_jwsts_generator(kit):
    from jwst.associations.main import Main

    made = Main.cli([str(kit.pool_path), "--dry-run"]).associations
    jwst_rules = {}
    for a in made:
        if a["asn_type"] in ("image2", "spec2"):
            [member] = [m for m in a["products"][0]["members"] if m["exptype"] == "science"]
            jwst_rules.setdefault(member["expname"].split("_rate")[0], set()).add(
                a["asn_rule"].removeprefix("candidate_"))
    for path in kit.by_mode["coron"]:
        eid = path.name.removesuffix("_uncal.fits")
        # (jwst adds a second, rate-based pass for coronagraphic science.)
        assert route(dict(fits.getheader(path, 0))).asn_rule in jwst_rules[eid], eid
