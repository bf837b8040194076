"""Header-only synthetic exposures: what an arrival event carries, no pixels.

One case per row of the routing table, plus the edge cases that pick between
rows (TSO or not, one integration, DHS, SOSS stripes, full-frame coronagraphy,
detectors a NIRSpec spectrum misses). Values are those real files carry
(stdatamodels' enums, SIAF subarray names), so a case also serves as a
template for association tests: override EXPOSURE, PATT_NUM, ... per member.
`small_uncal` wraps a header in a tiny uncal-like file, for tests that read
files rather than events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The keywords an exposure's name is made of (see `exposure_id`).
NAME_KEYWORDS: dict[str, Any] = {
    "PROGRAM": "01234",
    "OBSERVTN": "001",
    "VISIT": "001",
    "VISITGRP": "02",
    "SEQ_ID": "1",
    "ACT_ID": "01",
    "EXPOSURE": "00001",
}

BASE: dict[str, Any] = {
    **NAME_KEYWORDS,
    "NEXPOSUR": 1,
    "NINTS": 1,
    "NGROUPS": 5,
    "SUBARRAY": "FULL",
    "ENGQLPTG": "CALCULATED_TRACK_TR_202111",
    "DATE-OBS": "2026-05-26",
    "TIME-OBS": "12:00:00.000",
    "TSOVISIT": False,
    "VISITYPE": "PRIME_TARGETED_FIXED",
    "PATTTYPE": "NONE",
    "NUMDTHPT": 1,
    "PATT_NUM": 1,
    "SUBPXPTS": 1,
    "BKGDTARG": False,
    "IS_PSF": False,
    "IS_IMPRT": False,
    "TARGETID": 1,
}

_INSTRUMENT: dict[str, dict[str, Any]] = {
    "NIRCAM": {"DETECTOR": "NRCB1", "MODULE": "B", "CHANNEL": "SHORT",
               "FILTER": "F150W", "PUPIL": "CLEAR"},
    "NIRISS": {"DETECTOR": "NIS", "FILTER": "CLEAR", "PUPIL": "F150W"},
    "NIRSPEC": {"DETECTOR": "NRS1", "FILTER": "F290LP", "GRATING": "G395M"},
    "MIRI": {"DETECTOR": "MIRIMAGE", "FILTER": "F770W"},
    "FGS": {"DETECTOR": "GUIDER1"},
}

_TSO = {"TSOVISIT": True, "NINTS": 200}
_LONG_A = {"DETECTOR": "NRCALONG", "MODULE": "A", "CHANNEL": "LONG"}

# Per EXP_TYPE: keywords over the instrument's.
_EXP_TYPE: dict[str, dict[str, Any]] = {
    "NRC_TSIMAGE": {**_TSO, "DETECTOR": "NRCA1", "MODULE": "A", "SUBARRAY": "SUB64P",
                    "FILTER": "F210M"},
    "NRC_CORON": {"DETECTOR": "NRCALONG", "MODULE": "A", "CHANNEL": "LONG",
                  "SUBARRAY": "SUB320A335R", "FILTER": "F335M", "PUPIL": "MASKRND",
                  "NINTS": 10},
    "NRC_WFSS": {**_LONG_A, "FILTER": "F444W", "PUPIL": "GRISMR", "EXPOSURE": "00002"},
    "NRC_TSGRISM": {**_TSO, **_LONG_A, "SUBARRAY": "SUBGRISM64", "FILTER": "F444W",
                    "PUPIL": "GRISMR"},
    "NRC_TACQ": {"DETECTOR": "NRCA3", "MODULE": "A", "SUBARRAY": "SUB32TATS",
                 "FILTER": "F335M"},
    "NRC_GRISM": {**_LONG_A, "PUPIL": "GRISMR", "FILTER": "F444W"},
    "NIS_AMI": {"SUBARRAY": "SUB80", "FILTER": "F480M", "PUPIL": "NRM", "NINTS": 10},
    "NIS_WFSS": {"FILTER": "GR150R", "PUPIL": "F150W", "EXPOSURE": "00002"},
    "NIS_SOSS": {**_TSO, "SUBARRAY": "SUBSTRIP256", "FILTER": "CLEAR", "PUPIL": "GR700XD"},
    "NIS_TACQ": {"SUBARRAY": "SUBTASOSS", "FILTER": "F480M"},
    "NRS_FIXEDSLIT": {"FXD_SLIT": "S200A1", "SUBARRAY": "SUBS200A1"},
    "NRS_IFU": {"GRATING": "G395H", "PATTTYPE": "4-POINT-DITHER", "NUMDTHPT": 4,
                "MOSTILNO": 1, "DITHPTIN": 1},
    "NRS_MSASPEC": {"GRATING": "PRISM", "FILTER": "CLEAR", "MSASTATE": "CONFIGURED",
                    "MSAMETFL": "jw01234001001_01_msa.fits", "MOSTILNO": 1, "DITHPTIN": 1},
    "NRS_BRIGHTOBJ": {**_TSO, "FXD_SLIT": "S1600A1", "GRATING": "G395H", "FILTER": "F290LP",
                      "SUBARRAY": "SUB2048"},
    "NRS_AUTOWAVE": {"FILTER": "OPAQUE", "GRATING": "G235H", "LAMP": "LINE2",
                     "OPMODE": "FIXEDSLIT", "FXD_SLIT": "S200A1"},
    "NRS_AUTOFLAT": {"FILTER": "OPAQUE", "GRATING": "G235H", "LAMP": "FLAT2",
                     "OPMODE": "FIXEDSLIT", "FXD_SLIT": "S200A1"},
    "NRS_LAMP": {"FILTER": "OPAQUE", "GRATING": "G140H", "LAMP": "LINE1", "OPMODE": "IFU"},
    "NRS_MSATA": {"GRATING": "MIRROR", "FILTER": "F110W"},
    "NRS_WATA": {"GRATING": "MIRROR", "FILTER": "F110W"},
    "MIR_LRS-FIXEDSLIT": {"FILTER": "P750L", "PATTTYPE": "ALONG-SLIT-NOD", "NUMDTHPT": 2,
                          "EXPOSURE": "00002"},
    "MIR_LRS-SLITLESS": {**_TSO, "FILTER": "P750L", "SUBARRAY": "SLITLESSPRISM",
                         "EXPOSURE": "00002"},
    "MIR_MRS": {"DETECTOR": "MIRIFUSHORT", "FILTER": None, "BAND": "SHORT",
                "CHANNEL": "12", "PATTTYPE": "4-POINT", "NUMDTHPT": 4},
    "MIR_WFSS": {"FILTER": "P750L", "EXPOSURE": "00002"},
    "MIR_LYOT": {"SUBARRAY": "MASKLYOT", "FILTER": "F2300C", "NINTS": 10},
    "MIR_4QPM": {"SUBARRAY": "MASK1065", "FILTER": "F1065C", "NINTS": 10},
    "MIR_TACONFIRM": {"FILTER": "F560W", "SUBARRAY": "SLITLESSPRISM"},
    "MIR_DARKMRS": {"DETECTOR": "MIRIFULONG", "FILTER": None},
    "MIR_FLATMRS": {"DETECTOR": "MIRIFULONG", "FILTER": None},
    "FGS_ID-IMAGE": {"SUBARRAY": "SUBIDSTRIPCENTER"},
    "FGS_TRACK": {"SUBARRAY": "32X32"},
    "FGS_FINEGUIDE": {"SUBARRAY": "8X8"},
}

_WFSC = {"VISITYPE": "PRIME_WFSC_SENSING_CONTROL"}


@dataclass(frozen=True)
class HeaderCase:
    instrument: str
    exp_type: str
    variant: str = "default"
    keywords: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.exp_type.lower()}-{self.variant}"

    def header(self, **overrides: Any) -> dict[str, Any]:
        merged = {
            **BASE,
            "INSTRUME": self.instrument,
            "EXP_TYPE": self.exp_type,
            **_INSTRUMENT[self.instrument],
            **_EXP_TYPE.get(self.exp_type, {}),
            **self.keywords,
            **overrides,
        }
        if "TIME-OBS" not in overrides:
            merged["TIME-OBS"] = _start_time(merged)
        return {k: v for k, v in merged.items() if v is not None}


def _start_time(header: Mapping[str, Any]) -> str:
    # Exposures of a visit start minutes apart, as real ones do; names derived
    # from the start (association files) then differ between exposures.
    minutes = (int(str(header["ACT_ID"]), 36) - 1) * 10 + int(header["EXPOSURE"]) - 1
    return f"{12 + minutes // 60:02d}:{minutes % 60:02d}:00.000"


def _plain(instrument: str, *exp_types: str) -> list[HeaderCase]:
    return [HeaderCase(instrument, e) for e in exp_types]


_CASES: list[HeaderCase] = [
    # NIRCam
    HeaderCase("NIRCAM", "NRC_IMAGE"),
    HeaderCase("NIRCAM", "NRC_IMAGE", "background", {"BKGDTARG": True}),
    HeaderCase("NIRCAM", "NRC_IMAGE", "tso", {**_TSO, "SUBARRAY": "SUB64P"}),
    HeaderCase("NIRCAM", "NRC_IMAGE", "tso_single_integration",
               {"TSOVISIT": True, "NINTS": 1, "SUBARRAY": "SUB64P"}),
    HeaderCase("NIRCAM", "NRC_IMAGE", "wfsc", {**_WFSC, "PATTTYPE": "NONE"}),
    HeaderCase("NIRCAM", "NRC_IMAGE", "wfsc_pair", {**_WFSC, "PATTTYPE": "WFSC"}),
    HeaderCase("NIRCAM", "NRC_TSIMAGE"),
    HeaderCase("NIRCAM", "NRC_TSIMAGE", "single_integration", {"NINTS": 1}),
    HeaderCase("NIRCAM", "NRC_CORON"),
    HeaderCase("NIRCAM", "NRC_CORON", "psf", {"IS_PSF": True}),
    HeaderCase("NIRCAM", "NRC_CORON", "fullframe",
               {"SUBARRAY": "FULL", "DETECTOR": "NRCA2", "CHANNEL": "SHORT",
                "FILTER": "F210M", "PUPIL": "MASKRND"}),
    HeaderCase("NIRCAM", "NRC_CORON", "fullframe_unocculted",
               {"SUBARRAY": "FULL", "DETECTOR": "NRCA1", "CHANNEL": "SHORT",
                "FILTER": "F210M", "PUPIL": "MASKRND"}),
    HeaderCase("NIRCAM", "NRC_CORON", "fullframe_longwave", {"SUBARRAY": "FULL"}),
    HeaderCase("NIRCAM", "NRC_WFSS"),
    HeaderCase("NIRCAM", "NRC_TSGRISM"),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "single_integration", {"NINTS": 1}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "clear", {"PUPIL": "CLEAR"}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "nrcblong", {"DETECTOR": "NRCBLONG", "MODULE": "B"}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "dhs",
               {"DETECTOR": "NRCA1", "CHANNEL": "SHORT", "SUBARRAY": "SUB41STRIPE1_DHS",
                "PUPIL": "GDHS0", "FILTER": "F150W2", "NINTS": 50}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "dhs60",
               {"DETECTOR": "NRCA3", "CHANNEL": "SHORT", "SUBARRAY": "SUB164STRIPE4_DHS",
                "PUPIL": "GDHS60", "FILTER": "F150W2", "NINTS": 50}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "dhs_single_integration",
               {"DETECTOR": "NRCA1", "CHANNEL": "SHORT", "SUBARRAY": "SUB41STRIPE1_DHS",
                "PUPIL": "GDHS0", "FILTER": "F150W2", "NINTS": 1}),
    HeaderCase("NIRCAM", "NRC_TSGRISM", "dhs_longwave", {"SUBARRAY": "SUB41STRIPE1_DHS"}),
    HeaderCase("NIRCAM", "NRC_TACQ"),
    HeaderCase("NIRCAM", "NRC_TACQ", "tso_visit", {"TSOVISIT": True}),
    *_plain("NIRCAM", "NRC_TACONFIRM", "NRC_FOCUS", "NRC_DARK", "NRC_FLAT", "NRC_LED",
            "NRC_GRISM", "NRC_WFSC"),
    # NIRISS
    HeaderCase("NIRISS", "NIS_IMAGE"),
    HeaderCase("NIRISS", "NIS_IMAGE", "tso", _TSO),
    HeaderCase("NIRISS", "NIS_IMAGE", "wfsc_pair", {**_WFSC, "PATTTYPE": "WFSC"}),
    HeaderCase("NIRISS", "NIS_AMI"),
    HeaderCase("NIRISS", "NIS_WFSS"),
    HeaderCase("NIRISS", "NIS_SOSS"),
    HeaderCase("NIRISS", "NIS_SOSS", "single_integration", {"NINTS": 1}),
    HeaderCase("NIRISS", "NIS_SOSS", "f277w", {"FILTER": "F277W"}),
    HeaderCase("NIRISS", "NIS_SOSS", "not_tso", {"TSOVISIT": False, "NINTS": 2}),
    HeaderCase("NIRISS", "NIS_SOSS", "not_tso_no_pattern",
               {"TSOVISIT": False, "NINTS": 2, "PATTTYPE": None}),
    HeaderCase("NIRISS", "NIS_SOSS", "multistripe", {"SUBARRAY": "SUB204STRIPE_SOSS"}),
    HeaderCase("NIRISS", "NIS_SOSS", "superstripe", {"SUBARRAY": "SUB680STRIPE_SOSS"}),
    HeaderCase("NIRISS", "NIS_SOSS", "multistripe_f277w",
               {"SUBARRAY": "SUB60STRIPE_SOSS", "FILTER": "F277W"}),
    HeaderCase("NIRISS", "NIS_SOSS", "multistripe_single_integration",
               {"SUBARRAY": "SUB17STRIPE_SOSS", "NINTS": 1}),
    *_plain("NIRISS", "NIS_TACQ", "NIS_TACONFIRM", "NIS_FOCUS", "NIS_DARK", "NIS_LAMP",
            "NIS_EXTCAL"),
    # NIRSpec
    HeaderCase("NIRSPEC", "NRS_FIXEDSLIT"),
    HeaderCase("NIRSPEC", "NRS_FIXEDSLIT", "nod",
               {"PATTTYPE": "3-POINT-NOD", "NUMDTHPT": 3, "PATT_NUM": 1}),
    HeaderCase("NIRSPEC", "NRS_FIXEDSLIT", "background", {"BKGDTARG": True}),
    HeaderCase("NIRSPEC", "NRS_FIXEDSLIT", "dark_detector", {"DETECTOR": "NRS2"}),
    HeaderCase("NIRSPEC", "NRS_FIXEDSLIT", "opaque", {"FILTER": "OPAQUE"}),
    HeaderCase("NIRSPEC", "NRS_IFU"),
    HeaderCase("NIRSPEC", "NRS_IFU", "nod", {"PATTTYPE": "2-POINT-NOD", "NUMDTHPT": 2}),
    HeaderCase("NIRSPEC", "NRS_IFU", "imprint", {"IS_IMPRT": True}),
    HeaderCase("NIRSPEC", "NRS_IFU", "background", {"BKGDTARG": True}),
    HeaderCase("NIRSPEC", "NRS_IFU", "dark_detector",
               {"DETECTOR": "NRS2", "GRATING": "G395M"}),
    HeaderCase("NIRSPEC", "NRS_MSASPEC"),
    HeaderCase("NIRSPEC", "NRS_MSASPEC", "nod",
               {"PATTTYPE": "3-POINT-NOD", "NUMDTHPT": 3}),
    HeaderCase("NIRSPEC", "NRS_MSASPEC", "no_metafile", {"MSAMETFL": None}),
    HeaderCase("NIRSPEC", "NRS_MSASPEC", "msa_image",
               {"MSASTATE": "PRIMARYPARK_ALLOPEN", "GRATING": "MIRROR", "FILTER": "F110W"}),
    HeaderCase("NIRSPEC", "NRS_BRIGHTOBJ"),
    HeaderCase("NIRSPEC", "NRS_BRIGHTOBJ", "single_integration", {"NINTS": 1}),
    HeaderCase("NIRSPEC", "NRS_BRIGHTOBJ", "dark_detector",
               {"DETECTOR": "NRS2", "GRATING": "PRISM", "FILTER": "CLEAR"}),
    HeaderCase("NIRSPEC", "NRS_AUTOWAVE"),
    HeaderCase("NIRSPEC", "NRS_AUTOWAVE", "dark_detector",
               {"OPMODE": "IFU", "FXD_SLIT": None, "GRATING": "G395M", "LAMP": "LINE3",
                "DETECTOR": "NRS2"}),
    HeaderCase("NIRSPEC", "NRS_AUTOFLAT"),
    HeaderCase("NIRSPEC", "NRS_LAMP"),
    HeaderCase("NIRSPEC", "NRS_LAMP", "mirror", {"GRATING": "MIRROR", "OPMODE": "IMAGE"}),
    HeaderCase("NIRSPEC", "NRS_LAMP", "nolamp", {"LAMP": "NOLAMP"}),
    *_plain("NIRSPEC", "NRS_IMAGE", "NRS_FOCUS", "NRS_TACQ", "NRS_TACONFIRM", "NRS_CONFIRM",
            "NRS_WATA", "NRS_MSATA", "NRS_TASLIT", "NRS_VERIFY", "NRS_MIMF", "NRS_DARK"),
    # MIRI
    HeaderCase("MIRI", "MIR_IMAGE"),
    HeaderCase("MIRI", "MIR_IMAGE", "background", {"BKGDTARG": True}),
    HeaderCase("MIRI", "MIR_IMAGE", "tso", {**_TSO, "SUBARRAY": "SUB64"}),
    HeaderCase("MIRI", "MIR_IMAGE", "tso_single_integration",
               {"TSOVISIT": True, "NINTS": 1, "SUBARRAY": "SUB64"}),
    HeaderCase("MIRI", "MIR_LRS-FIXEDSLIT"),
    HeaderCase("MIRI", "MIR_LRS-FIXEDSLIT", "no_nod", {"PATTTYPE": "NONE", "NUMDTHPT": 1}),
    HeaderCase("MIRI", "MIR_LRS-FIXEDSLIT", "background",
               {"PATTTYPE": "NONE", "NUMDTHPT": 1, "BKGDTARG": True}),
    HeaderCase("MIRI", "MIR_LRS-FIXEDSLIT", "tso",
               {**_TSO, "PATTTYPE": "NONE", "NUMDTHPT": 1}),
    HeaderCase("MIRI", "MIR_LRS-SLITLESS"),
    HeaderCase("MIRI", "MIR_LRS-SLITLESS", "not_tso", {"TSOVISIT": False, "NINTS": 3}),
    HeaderCase("MIRI", "MIR_LRS-SLITLESS", "single_integration", {"NINTS": 1}),
    HeaderCase("MIRI", "MIR_MRS"),
    HeaderCase("MIRI", "MIR_MRS", "tso", {**_TSO, "PATTTYPE": "NONE", "NUMDTHPT": 1}),
    HeaderCase("MIRI", "MIR_MRS", "background", {"BKGDTARG": True}),
    HeaderCase("MIRI", "MIR_WFSS"),
    *_plain("MIRI", "MIR_LYOT", "MIR_4QPM", "MIR_TACQ", "MIR_TACONFIRM", "MIR_CORONCAL",
            "MIR_DARKALL", "MIR_DARKIMG", "MIR_DARKMRS", "MIR_FLATIMAGE", "MIR_FLATIMAGE-EXT",
            "MIR_FLATMRS", "MIR_FLATMRS-EXT"),
    # FGS
    HeaderCase("FGS", "FGS_IMAGE"),
    HeaderCase("FGS", "FGS_IMAGE", "wfsc", {**_WFSC, "PATTTYPE": "NONE"}),
    *_plain("FGS", "FGS_FOCUS", "FGS_DARK", "FGS_SKYFLAT", "FGS_INTFLAT", "FGS_ID-IMAGE",
            "FGS_ID-STACK", "FGS_ACQ1", "FGS_ACQ2", "FGS_TRACK", "FGS_FINEGUIDE"),
]

CASES: dict[str, HeaderCase] = {c.id: c for c in _CASES}
assert len(CASES) == len(_CASES), "duplicate header case ids"


def synthetic_header(
    instrument: str, exp_type: str, variant: str = "default", **overrides: Any
) -> dict[str, Any]:
    """A realistic arrival header for (instrument, exp_type, variant).

    ``overrides`` replace keywords (a value of None removes one), e.g.
    ``EXPOSURE="00002", PATT_NUM=2`` for the second nod.
    """
    case = CASES.get(f"{exp_type.lower()}-{variant}")
    if case is None:
        if variant != "default":
            raise KeyError(f"no synthetic header variant {variant!r} for {exp_type}")
        case = HeaderCase(instrument.upper(), exp_type.upper())
    if case.instrument != instrument.upper():
        raise KeyError(f"{exp_type} is a {case.instrument} exposure type, not {instrument}")
    return case.header(**overrides)


def exposure_id(header: Mapping[str, Any]) -> str:
    """The exposure id (file name stem without suffix) the header describes."""
    segment = header.get("EXSEGNUM")
    seg = f"-seg{int(segment):03d}" if segment is not None else ""
    return (
        f"jw{header['PROGRAM']}{header['OBSERVTN']}{header['VISIT']}"
        f"_{header['VISITGRP']}{header['SEQ_ID']}{header['ACT_ID']}"
        f"_{header['EXPOSURE']}{seg}_{str(header['DETECTOR']).lower()}"
    )


# The primary header of `small_uncal`'s files: what the arrival checks read,
# for a 64x64 NIRCam imaging subarray (tests override keywords as they need).
SMALL_UNCAL_HEADER: dict[str, Any] = {
    **NAME_KEYWORDS,
    "INSTRUME": "NIRCAM",
    "DETECTOR": "NRCB1",
    "EXP_TYPE": "NRC_IMAGE",
    "NEXPOSUR": 4,
    "NINTS": 1,
    "NGROUPS": 2,
    "SUBARRAY": "SUB64P",
    "ENGQLPTG": "CALCULATED_TRACK_TR_202111",
    "DATE-OBS": "2026-01-02",
    "TIME-OBS": "03:04:05.678",
}


def small_uncal(header: Mapping[str, Any], sci) -> bytes:
    """An uncal-like FITS file in memory: `header` as the primary keywords
    (a value of None is left out), the `sci` array as its SCI extension, and
    an ASDF extension of an empty tree last, as stdatamodels ends an uncal file."""
    import io

    from astropy.io import fits

    primary = fits.PrimaryHDU()
    for key, value in header.items():
        if value is not None:
            primary.header[key] = value
    buf = io.BytesIO()
    fits.HDUList([primary, fits.ImageHDU(sci, name="SCI"), asdf_extension()]).writeto(buf)
    return buf.getvalue()


def write_sparse_uncal(path, header: Mapping[str, Any], rows: int = 16,
                       columns: int = 16) -> int:
    """A whole uncal file of ``header``'s NGROUPS x NINTS frames whose
    pixels are a hole in a sparse file (no disk; zeros when read): headers
    that agree with each other, and the size they declare. The test of a
    door's size bound (a header may declare terabytes). Returns the size."""
    import io

    import numpy as np
    from astropy.io import fits

    ngroups, nints = header["NGROUPS"], header["NINTS"]
    small = small_uncal(header, np.zeros((1, 1, rows, columns), np.uint16))
    with fits.open(io.BytesIO(small)) as hdul:
        primary = hdul[0].header.tostring().encode()
        sci = hdul["SCI"].header.copy()
        asdf_at = hdul.fileinfo(2)["hdrLoc"]
    sci["NAXIS3"], sci["NAXIS4"] = ngroups, nints
    pixels = rows * columns * 2 * ngroups * nints
    with open(path, "wb") as f:
        f.write(primary + sci.tostring().encode())
        f.seek(-(-pixels // 2880) * 2880, 1)  # the pixels, padded: a hole
        f.write(small[asdf_at:])
        return f.tell()


# An ASDF file of an empty tree, as the asdf library writes one.
EMPTY_ASDF = (b"#ASDF 1.0.0\n#ASDF_STANDARD 1.5.0\n%YAML 1.1\n%TAG ! tag:stsci.edu:asdf/\n"
              b"--- !core/asdf-1.1.0\n{}\n...\n")


def asdf_extension(tree: bytes = EMPTY_ASDF):
    """The ASDF extension stdatamodels writes: a table of one row, the ASDF
    file's bytes in its one column."""
    import numpy as np
    from astropy.io import fits

    column = fits.Column(name="ASDF_METADATA", format=f"{len(tree)}B",
                         array=np.frombuffer(tree, np.uint8)[None, :])
    return fits.BinTableHDU.from_columns([column], name="ASDF")
