import json

import numpy as np
import pytest

from calstream.steps.exposure import BadExposure, describe_exposure, missing_extensions
from calstream.steps.exposure_keywords import (
    EXPOSURE_KEYWORDS,
    OPTIONAL_KEYWORDS,
    REQUIRED_KEYWORDS,
)
from calstream.steps.fitsfile import BLOCK, fits_layout
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"

GOOD = {
    **SMALL_UNCAL_HEADER,
    "MODULE": "B",
    "FILTER": "F150W",
    "TSOVISIT": False,
    "EFFEXPTM": 21.47,
}


def uncal_bytes(**changes) -> bytes:
    """A small uncal-like file: the identifying primary header and a SCI cube.
    A keyword given as None is left out."""
    return small_uncal({**GOOD, **changes}, np.zeros((1, 2, 16, 16), dtype=np.uint16))


def write(tmp_path, name=NAME, **changes):
    p = tmp_path / name
    p.write_bytes(uncal_bytes(**changes))
    return p


def test_the_door_looks_up_each_primary_keyword_once(tmp_path, monkeypatch):
    # astropy finds and reads a card at every access (~10-20 us); the checks
    # ask most keywords several times. 2.11 ms of CPU a SUB160 arrival, 1.90
    # with each looked up once (bench/README.md, session 27).
    from astropy.io import fits

    asked: dict[str, int] = {}
    look_up = fits.Header.__getitem__

    def counted(self, key):
        asked[key] = asked.get(key, 0) + 1
        return look_up(self, key)

    monkeypatch.setattr(fits.Header, "__getitem__", counted)
    info = describe_exposure(write(tmp_path))
    assert info.header["EXP_TYPE"] == GOOD["EXP_TYPE"]
    primary = {k.name for k in EXPOSURE_KEYWORDS} | {"SUBSIZE1", "SUBSIZE2"}
    assert {k: n for k, n in asked.items() if k in primary and n > 1} == {}
    assert asked["PROGRAM"] == 1


def test_keyword_lists():
    assert REQUIRED_KEYWORDS == (
        "PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE",
        "INSTRUME", "DETECTOR", "EXP_TYPE", "NEXPOSUR", "NINTS", "NGROUPS", "SUBARRAY",
        "ENGQLPTG", "DATE-OBS", "TIME-OBS",
    )  # fmt: skip
    assert {"EXSEGNUM", "MOSTILNO", "READPATT", "APERNAME"} <= set(OPTIONAL_KEYWORDS)
    assert len({k.name for k in EXPOSURE_KEYWORDS}) == len(EXPOSURE_KEYWORDS)


def test_good_exposure(tmp_path):
    info = describe_exposure(write(tmp_path))
    assert info.exposure_id == "jw01234001001_02101_00001_nrcb1"
    assert info.name.detector == "nrcb1" and info.name.suffix == "uncal"
    assert info.path == tmp_path / NAME
    assert info.header["PROGRAM"] == "01234"
    assert info.header["NEXPOSUR"] == 4
    assert info.header["TSOVISIT"] is False
    assert info.header["EFFEXPTM"] == pytest.approx(21.47)
    assert set(REQUIRED_KEYWORDS) <= set(info.header)
    assert "PUPIL" not in info.header  # optional and absent: not invented
    assert "BITPIX" not in info.header  # only the documented keywords travel
    json.dumps(info.header)


def test_integer_ids_and_long_detector_names(tmp_path):
    # Some writers store ids as integers; NRCALONG is 'nrcalong' in names.
    name = "jw01234001001_02101_00001_nrcalong_uncal.fits"
    info = describe_exposure(
        write(tmp_path, name, PROGRAM=1234, EXPOSURE=1, DETECTOR="NRCALONG", MODULE="A")
    )
    assert info.exposure_id == "jw01234001001_02101_00001_nrcalong"
    # ... and travel as the name's text (the arrival's schema wants PROGRAM as text)
    assert (info.header["PROGRAM"], info.header["EXPOSURE"]) == ("01234", "00001")


def test_missing_required_keywords(tmp_path):
    with pytest.raises(BadExposure) as err:
        describe_exposure(write(tmp_path, NGROUPS=None, ENGQLPTG=None))
    msg = str(err.value)
    assert NAME in msg and "NGROUPS" in msg and "ENGQLPTG" in msg and "missing" in msg


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"DETECTOR": "NRCB2"}, "DETECTOR = 'NRCB2' but the name says 'nrcb1'"),
        ({"EXPOSURE": "00002"}, "EXPOSURE = '00002' but the name says '00001'"),
        ({"PROGRAM": "01235"}, "PROGRAM"),
        ({"VISITGRP": "03"}, "VISITGRP"),
        ({"ACT_ID": "02"}, "ACT_ID"),
        ({"EXSEGNUM": 2, "EXSEGTOT": 3}, "EXSEGTOT = 3"),
    ],
)
def test_name_and_header_disagree(tmp_path, changes, words):
    with pytest.raises(BadExposure) as err:
        describe_exposure(write(tmp_path, **changes))
    msg = str(err.value)
    assert NAME in msg and "disagree" in msg and words in msg


def test_segments(tmp_path):
    name = "jw01234001001_02101_00001-seg002_nrcb1_uncal.fits"
    info = describe_exposure(write(tmp_path, name, EXSEGNUM=2, EXSEGTOT=3))
    assert info.exposure_id == "jw01234001001_02101_00001-seg002_nrcb1"
    assert info.header["EXSEGNUM"] == 2

    with pytest.raises(BadExposure, match="EXSEGNUM = 3 but the name says segment 002"):
        describe_exposure(write(tmp_path, name, EXSEGNUM=3, EXSEGTOT=3))
    with pytest.raises(BadExposure, match="EXSEGNUM is missing"):
        describe_exposure(write(tmp_path, name))


@pytest.mark.parametrize("changes, words", [
    ({"ENGQLPTG": 3.5}, "ENGQLPTG = 3.5 is not text"),  # would pass the hold as not PLANNED
    ({"INSTRUME": 5}, "INSTRUME = 5 is not text"),
    ({"EXP_TYPE": True}, "EXP_TYPE = True is not text"),
    ({"SUBARRAY": 160}, "SUBARRAY = 160 is not text"),
])
def test_keywords_read_as_text_must_be_text(tmp_path, changes, words):
    """The same rule for a file at the door and for its header carried in a
    product event (header_copy_problems)."""
    from calstream.steps.exposure import header_copy_problems
    from calstream.steps.naming import parse_exposure_name

    with pytest.raises(BadExposure, match="impossible header value") as err:
        describe_exposure(write(tmp_path, **changes))
    assert words in str(err.value)
    header = describe_exposure(write(tmp_path)).header
    name = parse_exposure_name(NAME)
    assert header_copy_problems(name, header) == []
    assert header_copy_problems(name, {**header, **changes}) == [words]


@pytest.mark.parametrize(
    "name, words",
    [
        ("jw01234001001_02101_00001_nrcb1_rate.fits", "not an uncal exposure"),
        ("jw01234001001_02101_00001_nrcb1_uncal.fit", "not a JWST exposure name"),
        ("jw01234001001_02101_00001_nrcb1.fits", "not an uncal exposure"),
        ("notes_uncal.fits", "not a JWST exposure name"),
    ],
)
def test_bad_names(tmp_path, name, words):
    with pytest.raises(BadExposure, match=words):
        describe_exposure(write(tmp_path, name))


def test_not_fits_content(tmp_path):
    p = tmp_path / NAME
    p.write_text("this is a log file\n" * 50)
    with pytest.raises(BadExposure, match="not a FITS file"):
        describe_exposure(p)


def _with_extensions(tmp_path, *extensions):
    """An uncal file whose extensions after the primary are ``extensions``,
    and the ASDF extension stdatamodels writes last (a whole uncal file)."""
    from astropy.io import fits

    from calstream.steps.synthetic.headers import asdf_extension

    primary = fits.PrimaryHDU()
    for key, value in {**GOOD, "SUBSIZE1": 16, "SUBSIZE2": 16}.items():
        primary.header[key] = value
    p = tmp_path / NAME
    fits.HDUList([primary, *extensions, asdf_extension()]).writeto(p)
    return p


def test_the_sci_axes_are_those_astropy_finds(tmp_path):
    # The header walk, not astropy, reads the SCI axes: it must pick the HDU
    # hdul["SCI"] picks (the first, EXTNAME without case or spaces) and read
    # its axes as astropy does.
    from astropy.io import fits

    def cube(rows, groups=2, dtype=np.uint16):
        return np.zeros((1, groups, rows, 16), dtype=dtype)

    ok = [fits.ImageHDU(name="DQ", data=cube(8)), fits.ImageHDU(cube(16), name="sci"),
          fits.ImageHDU(cube(8), name="SCI")]
    info = describe_exposure(_with_extensions(tmp_path, *ok))
    assert info.exposure_id == "jw01234001001_02101_00001_nrcb1"
    with fits.open(tmp_path / NAME) as hdul:
        assert hdul["SCI"].header["NAXIS2"] == 16  # the first: what the check read

    # A tile-compressed SCI (a binary table) has the axes astropy presents
    (tmp_path / NAME).unlink()
    info = describe_exposure(_with_extensions(tmp_path, fits.CompImageHDU(cube(16), name="SCI")))
    assert info.exposure_id == "jw01234001001_02101_00001_nrcb1"

    # A forged compressed header astropy cannot read (ZNAXIS = 'x' raised
    # TypeError out of the check) is a reason, like any unreadable header
    (tmp_path / NAME).unlink()
    data = _with_extensions(tmp_path, fits.CompImageHDU(cube(16), name="SCI")).read_bytes()
    at = data.index(b"ZNAXIS  =", 2880)
    (tmp_path / NAME).write_bytes(data[:at] + b"ZNAXIS  = 'x'".ljust(80) + data[at + 80:])
    with pytest.raises(BadExposure, match="ZNAXIS = 'x' is not an integer"):
        describe_exposure(tmp_path / NAME)

    for extensions, words in (
            ([fits.ImageHDU(cube(8), name="SCI")], "NAXIS2 = 8 but SUBSIZE2 = 16"),
            ([fits.ImageHDU(cube(16, groups=3), name="SCI")], "SCI holds 3 group(s)"),
            ([fits.ImageHDU(np.zeros((16, 16), np.uint16), name="SCI")], "SCI has NAXIS = 2"),
            ([fits.ImageHDU(cube(16), name="SCIX")], "no SCI extension"),
            ([fits.CompImageHDU(cube(8), name="SCI")], "NAXIS2 = 8 but SUBSIZE2 = 16"),
            ([], "no SCI extension")):
        (tmp_path / NAME).unlink()
        with pytest.raises(BadExposure, match=words.replace("(", r"\(").replace(")", r"\)")):
            describe_exposure(_with_extensions(tmp_path, *extensions))


def _with_card(tmp_path, sci, key: bytes, card: bytes, *, replace: bool = True):
    """An uncal file whose SCI extension is ``sci``, with ``card`` written
    over the first card of its headers that starts with ``key`` (or, not
    ``replace``, over the card after it)."""
    (tmp_path / NAME).unlink(missing_ok=True)
    data = _with_extensions(tmp_path, sci).read_bytes()
    at = data.index(key, 2880) + (0 if replace else 80)
    (tmp_path / NAME).write_bytes(data[:at] + card.ljust(80) + data[at + 80:])
    return tmp_path / NAME


def test_a_sci_extension_jwst_would_read_otherwise_is_refused(tmp_path):
    # The door reads the SCI cards itself; what it accepts, astropy (jwst's
    # reader) must read as the same array. These were accepted and failed in
    # detector1, or were read with another shape (door fuzz of the extension
    # headers, session 22).
    from astropy.io import fits

    def sci_card(key: bytes, card: bytes, *, replace: bool = True):
        image = fits.ImageHDU(np.zeros((1, 2, 16, 16), np.uint16), name="SCI")
        return _with_card(tmp_path, image, key, card, replace=replace)

    for key, card, words in (
            (b"BZERO   =", b"BZERO   = NaN", "HDU 1: BZERO = NaN is not a number"),
            (b"BZERO   =", b"BZERO   = '32768'", "HDU 1: BZERO = '32768' is not a number"),
            (b"BZERO   =", b"BZERO   = 1E999", "HDU 1: BZERO = 1E999 cannot scale pixels"),
            (b"BSCALE  =", b"BSCALE  = 0", "HDU 1: BSCALE = 0 cannot scale pixels"),
            (b"BSCALE  =", b"BSCALE  = T", "HDU 1: BSCALE = T is not a number"),
            (b"XTENSION=", b"XTENSION= 'TABLE   '", "SCI extension is no image"),
            (b"XTENSION=", b"XTENSION= 'SCI'", "SCI extension is no image"),
            # stdatamodels reads ("SCI", 1): a SCI of another version is none
            (b"BSCALE  =", b"EXTVER  =                    2", "no SCI extension")):
        with pytest.raises(BadExposure, match=words):
            describe_exposure(sci_card(key, card))
    # A scaling written with a D exponent is a number (FITS 4.2.4)
    assert describe_exposure(sci_card(b"BZERO   =", b"BZERO   = 3.2768D4")).header
    # An axis declared twice: astropy's header gives the first, its data the
    # shape of the last; the walk refuses the file (a corrupt header)
    with pytest.raises(BadExposure, match="declares NAXIS2 twice"):
        describe_exposure(sci_card(b"NAXIS2  =", b"NAXIS2  = 7", replace=False))
    # A binary table named SCI that is no compressed image
    (tmp_path / NAME).unlink()
    table = fits.BinTableHDU.from_columns([fits.Column("v", "J", array=np.arange(3))], name="SCI")
    with pytest.raises(BadExposure, match="SCI extension is a table"):
        describe_exposure(_with_extensions(tmp_path, table))


@pytest.mark.filterwarnings("ignore")  # astropy warns of the forged cards as it reads them
def test_a_tile_compressed_sci_is_read_whole_at_the_door(tmp_path):
    # A compressed SCI's header says how large the image is, not the file,
    # and its table's keywords are read only with the pixels: the door
    # bounds the pixels by the file's size and reads them as jwst will.
    from astropy.io import fits

    cube = np.random.default_rng(1).integers(0, 60000, (1, 2, 16, 16)).astype(np.uint16)

    def forged(key: bytes, card: bytes):
        return _with_card(tmp_path, fits.CompImageHDU(cube, name="SCI"), key, card)

    for key, card, words in (
            # 32 MB of pixels declared by a file of 8.6 kB; only the primary's
            # counts bound the axes (to 10**21 bytes): a worker would be
            # killed for such a file on every attempt
            (b"ZNAXIS1 =", b"ZNAXIS1 =               500000", "more than 16 times its size"),
            (b"ZCMPTYPE=", b"ZCMPTYPE= 'BOGUS'", "SCI header or pixels cannot be read"),
            (b"ZBITPIX =", b"ZBITPIX =                    7", "compressed SCI has BITPIX = 7"),
            (b"ZTILE1  =", b"ZTILE1  =                    0", "ZTILE1 = 0 is no positive"),
            # the heap cut short: astropy's plane reads took tiles past it
            (b"PCOUNT  =", b"PCOUNT  =                    7", "outside the heap of 7 bytes"),
            # astropy loops over as many columns as declared as it opens the table
            (b"TFIELDS =", b"TFIELDS =             99999999", "TFIELDS = 99999999 is not an")):
        with pytest.raises(BadExposure, match=words):
            describe_exposure(forged(key, card))


def test_missing_extensions(tmp_path):
    data = uncal_bytes()
    p = tmp_path / NAME
    p.write_bytes(data)
    assert missing_extensions(fits_layout(p)) == []
    # Cut after the primary HDU: valid FITS, but the pixels are not there yet.
    primary_end = fits_layout(p).hdus[0].end
    assert primary_end % BLOCK == 0
    p.write_bytes(data[:primary_end])
    layout = fits_layout(p)
    assert layout.complete
    assert missing_extensions(layout) == ["SCI", "ASDF"]
    # Cut after the pixels: still no ASDF extension, which stdatamodels writes last.
    p.write_bytes(data)
    sci_end = fits_layout(p).hdus[1].end
    p.write_bytes(data[:sci_end])
    assert missing_extensions(fits_layout(p)) == ["ASDF"]
    assert missing_extensions(fits_layout(p), ("SCI",)) == []


GUIDER_NAME = "jw01019001001_gs-acq1_2022117003102_uncal.fits"
# What a guider header lacks (jwst's guider files carry none of these).
NOT_IN_GUIDER = {k: None for k in ("VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE", "ENGQLPTG")}


def _guider(tmp_path, name=GUIDER_NAME, exp_type="FGS_ACQ1", **changes):
    return write(tmp_path, name, **{
        "PROGRAM": "01019", "INSTRUME": "FGS", "DETECTOR": "GUIDER1", "EXP_TYPE": exp_type,
        **NOT_IN_GUIDER, **changes})


@pytest.mark.parametrize("exp_type", ["FGS_ACQ1", "FGS_ACQ2", "FGS_FINEGUIDE", "FGS_ID-IMAGE",
                                      "FGS_ID-STACK", "FGS_TRACK"])
def test_guider_files_as_jwst_names_them(tmp_path, exp_type):
    info = describe_exposure(_guider(tmp_path, exp_type=exp_type))
    assert info.exposure_id == "jw01019001001_gs-acq1_2022117003102"
    assert info.name.is_guider and info.name.suffix == "uncal"
    assert info.name.program == "01019" and info.name.visit_id == "jw01019001001"
    assert info.header["EXP_TYPE"] == exp_type and "VISITGRP" not in info.header


def test_guider_exposure_style_name_and_guider_checks(tmp_path):
    # Under an exposure-style name the five keywords are not demanded either.
    name = "jw01019001001_02101_00001_guider1_uncal.fits"
    assert describe_exposure(_guider(tmp_path, name)).exposure_id == (
        "jw01019001001_02101_00001_guider1")
    # What a guider header does carry is still checked against the name.
    with pytest.raises(BadExposure, match="PROGRAM"):
        describe_exposure(_guider(tmp_path, PROGRAM="01020"))
    with pytest.raises(BadExposure, match="NGROUPS"):
        describe_exposure(_guider(tmp_path, NGROUPS=None))
    # A science exposure type still needs them, and cannot take a guider name.
    with pytest.raises(BadExposure, match="VISITGRP"):
        describe_exposure(_guider(tmp_path, name, exp_type="FGS_IMAGE"))
    with pytest.raises(BadExposure, match="no FGS guider mode"):
        describe_exposure(write(tmp_path, GUIDER_NAME, PROGRAM="01019"))


def test_guider_names_parse_and_others_do_not():
    from calstream.steps.naming import BadName, parse_exposure_name

    for name, eid in [
        ("jw01029001001_gs-fg_2022142181502_uncal.fits", "jw01029001001_gs-fg_2022142181502"),
        ("jw01029001001_gs-id_1_image_uncal.fits", "jw01029001001_gs-id_1_image"),
        ("jw01029001001_gs-id_1_stacked_cal.fits", "jw01029001001_gs-id_1_stacked"),
    ]:
        parsed = parse_exposure_name(name)
        assert parsed.exposure_id == eid and parsed.is_guider
        assert parsed.filename() == name
    assert not parse_exposure_name(NAME).is_guider
    for bad in ("jw01029001001_gs-xyz_2022142181502_uncal.fits",
                "jw01029001001_gs-acq1_20221_uncal.fits",
                # a final newline, Unicode digits: no JWST name has them
                "jw01029001001_gs-fg_2022142181502_uncal.fits\n", f"{NAME}\n",
                "jw\u0660\u0661\u0662\u0663\u0664001001_02101_00001_nrcb1_uncal.fits"):
        with pytest.raises(BadName):
            parse_exposure_name(bad)


def test_the_arrival_schema_admits_guider_exposure_ids():
    import re
    from pathlib import Path

    import calstream.topics as topics

    schema = json.loads((Path(topics.__file__).parent / "schemas/arrival.schema.json").read_text())
    pattern = schema["properties"]["exposure_id"]["pattern"]
    for eid in ("jw01019001001_gs-acq1_2022117003102", "jw01029001001_gs-id_1_stacked",
                "jw01234001001_02101_00001-seg001_nrcb1"):
        assert re.search(pattern, eid), eid
    for eid in ("jw01019001001_gs-acq3_2022117003102", "jw01234001001_gs-acq1_1_nrcb1"):
        assert not re.search(pattern, eid), eid


def test_the_target_name_travels_for_level3_target_numbers(tmp_path):
    assert describe_exposure(write(tmp_path, TARGNAME="NGC 6543")).header["TARGNAME"] == "NGC 6543"


def test_a_file_larger_than_any_exposure_is_refused_by_its_headers(tmp_path):
    """Each count within its bound, together 82 GB of pixels in a sparse
    file: refused from the headers, so neither the door nor an admission of
    a forged arrival naming it hashes the hole (steps/exposure.py)."""
    from calstream.steps.synthetic.headers import write_sparse_uncal

    path = tmp_path / NAME
    size = write_sparse_uncal(path, {**GOOD, "NGROUPS": 1000, "NINTS": 10_000}, 64, 64)
    assert size > 64 << 30 and fits_layout(path).complete
    with pytest.raises(BadExposure, match="larger than any exposure"):
        describe_exposure(path)


def test_a_file_not_yet_whole_is_no_exposure(tmp_path):
    """What the door waits for, a message naming the file cannot skip
    (an arrival someone else sent for a file still being copied in)."""
    data = uncal_bytes()
    layout = fits_layout(write(tmp_path))
    sci = next(h for h in layout.hdus if h.extname == "SCI")
    for cut, words in ((sci.data_offset + 100, "HDU 1 declares"),
                       (layout.hdus[-1].header_offset, "no ASDF extension")):
        (tmp_path / NAME).write_bytes(data[:cut])
        with pytest.raises(BadExposure, match=f"not a whole exposure: .*{words}"):
            describe_exposure(tmp_path / NAME)
