"""A corpus of bad files and messages, generated at run time (never committed).

Each item is one distinct way an input can be wrong: bytes that are not a
message, messages that break the schema, messages that follow the schema but
are impossible or forged, and files that are not whole, possible exposures.
The hostile-input test sends them all at one live daemon; every item must end
as a dead letter with a reason, or as an ignore that the docs justify and a
metric counts.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal

# Topics the daemon consumes while it runs, and the message type each carries.
CONSUMED = {
    "raw": "arrival", "replay": "arrival",
    "work.stage2": "work_order", "work.stage3": "work_order",
    "work.stage2.replay": "work_order", "work.stage3.replay": "work_order",
    "products": "product", "pointing": "pointing_update", "plans": "plan",
}
# Read by the planner when it starts (its own earlier records): checked after a restart.
READ_AT_START = {"holds": "hold"}


@dataclass(frozen=True)
class BadMessage:
    name: str
    topic: str
    value: bytes | None
    key: bytes | None = b"hostile"
    # "dead_letter", or "stale": a work order whose inputs changed since it was
    # planned is skipped as stale (docs/design.md: a newer order covers the
    # new content), counted in calstream_stage_runs_total{outcome="stale"}.
    expect: str = "dead_letter"


@dataclass(frozen=True)
class BadFile:
    name: str
    filename: str
    write: Callable[[Path], None]  # writes the item into the given inbox


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def byte_level(topic: str, template: dict[str, Any]) -> list[BadMessage]:
    """The same seventeen ways to be unreadable, for any topic."""
    wrong_type = {**template, "schema": "calstream.promotion"}
    items = {
        "invalid utf-8": b'{"schema": "calstream.x", "v": "\xff\xfe\xfd"}',
        "not json": b"{this is not json",
        "json array": b"[1, 2, 3]",
        "json string": b'"calstream.arrival"',
        "json null": b"null",
        "empty value": b"",
        "tombstone": None,
        "5000-digit integer": _json(template)[:-1] + b', "n": ' + b"7" * 5000 + b"}",
        "100000-deep nesting": b'{"n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "NaN literal": _json(template)[:-1] + b', "n": NaN}',
        "Infinity literal": _json(template)[:-1] + b', "n": Infinity}',
        "duplicate keys": _json(template)[:-1] + b', "schema": "calstream.hold"}',
        "oversize (1.5 MB)": _json({**template, "padding": "x" * 1_500_000}),
        "another topic's type": _json(wrong_type),
        "future major version": _json({**template, "schema_version": "9.0"}),
        "required field missing": _json({k: v for k, v in template.items() if k != "event_id"}),
        "unknown schema": _json({**template, "schema": "calstream.bogus"}),
    }
    return [BadMessage(f"{topic}: {name}", topic, value) for name, value in items.items()]


def _with(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(template)
    for key, value in changes.items():
        body[key] = value
    return body


def semantic(templates: dict[str, dict[str, Any]], *, sentinel: Path, inbox: Path,
             planned_arrival: dict[str, Any]) -> list[BadMessage]:
    """Messages that follow the schema but are impossible, forged or aimed
    outside the roots. ``templates`` are real messages the daemon made."""
    arrival, order2, order3 = templates["arrival"], templates["order2"], templates["order3"]
    product, product2 = templates["product"], templates["product2"]
    escape = str(sentinel / "escaped")
    traversal = str(inbox) + "/../" * 12 + str(sentinel)[1:] + "/x_uncal.fits"
    forged_header = dict(planned_arrival["header"], ENGQLPTG="CALCULATED_TRACK_TR_202111")
    asn_escape = copy.deepcopy(order2["association"])
    asn_escape["products"][0]["members"][0]["expname"] = "/etc/passwd"
    asn_name = copy.deepcopy(order2["association"])
    asn_name["asn_id"] = "../../../" + escape
    asn_name["products"][0]["name"] = "../../../" + escape
    asn3_escape = copy.deepcopy(order3["association"])
    for member in asn3_escape["products"][0]["members"]:
        member["expname"] = escape + "/" + Path(member["expname"]).name
    # jwst names a stage-2 product after its association's product: this one
    # would have written the visit's other dither's cal file over its own.
    number = order2["product_name"].split("_")[2]
    other = order2["product_name"].replace(f"_{number}_",
                                           "_00002_" if number == "00001" else "_00001_")
    asn_other = copy.deepcopy(order2["association"])
    asn_other["products"][0]["name"] = other
    filter_name = order2["header"].get("FILTER")
    forged_filter = dict(order2["header"], FILTER="F444W" if filter_name != "F444W" else "F150W")
    # A stage-3 product event carries its order's copy (WFSS grisms find
    # their direct image by it): its members' own files say their filter.
    filter3 = order3["header"].get("FILTER")
    forged_filter3 = dict(order3["header"], FILTER="F444W" if filter3 != "F444W" else "F150W")
    # stpipe honours hooks (a shell command run after the step) and output_dir
    # in the step parameters an order carries (deciders/order_parameters.py).
    hooked = {"assign_wcs": {"post_hooks": [f"touch {escape}"]}}
    hooked3 = {"tweakreg": {"pre_hooks": [f"touch {escape}"]}}
    written_elsewhere = {"flat_field": {"output_dir": str(sentinel), "save_results": True}}
    out_escape = [dict(o, path="/etc/passwd") for o in product["outputs"]]
    out_traversal = [dict(o, path=o["path"] + "/../" * 12 + escape[1:]) for o in product["outputs"]]
    items = [
        ("raw", "arrival for /etc/passwd", _with(arrival, path="/etc/passwd")),
        ("raw", "arrival path climbing out of the inbox", _with(arrival, path=traversal)),
        ("raw", "arrival for a file that does not exist",
         _with(arrival, path=str(inbox / "jw01234001001_02101_09999_nrcb1_uncal.fits"),
               exposure_id="jw01234001001_02101_09999_nrcb1")),
        ("raw", "arrival for a directory", _with(arrival, path=str(inbox))),
        ("raw", "arrival whose exposure id is not its file's",
         _with(arrival, exposure_id="jw01234001001_02101_00077_nrcb1")),
        ("raw", "arrival forging CALCULATED pointing for a PLANNED file",
         _with(planned_arrival, header=forged_header, event_id="e" * 64)),
        ("raw", "arrival with a negative size", _with(arrival, size=-1, event_id="f" * 64)),
        ("raw", "replay-priority arrival without a replay", _with(arrival, priority="replay",
                                                                  event_id="1" * 64)),
        ("replay", "replay arrival without its replay object",
         _with(arrival, source="replay", priority="replay", replay=None, event_id="2" * 64)),
        ("work.stage2", "order whose association is empty", _with(order2, association={})),
        ("work.stage2", "order with a member outside the roots",
         _with(order2, association=asn_escape)),
        ("work.stage2", "order with association and product names that climb out",
         _with(order2, association=asn_name)),
        ("work.stage2", "order whose association names another exposure's product",
         _with(order2, association=asn_other)),
        ("work.stage2", "order whose header copy is not its science file's (another filter)",
         _with(order2, header=forged_filter)),
        ("work.stage2", "order in a namespace without a replay", _with(order2, namespace="evil")),
        ("work.stage2", "stage-3 order on the stage-2 topic", _with(order2, stage="stage3")),
        ("work.stage2", "order for a pipeline that does not exist",
         _with(order2, pipeline="calwebb_evil")),
        ("work.stage2", "order whose step parameters run a shell command",
         _with(order2, parameters={**order2.get("parameters", {}), "steps": hooked})),
        ("work.stage2", "order whose step parameters write outside the store",
         _with(order2, parameters={**order2.get("parameters", {}), "steps": written_elsewhere})),

        ("work.stage2.replay", "replay order with live inputs and no replay",
         _with(order2, priority="replay", namespace="evil2")),
        ("work.stage3", "stage-3 order with members outside the roots",
         _with(order3, association=asn3_escape)),
        ("work.stage3", "stage-3 order without members",
         _with(order3, association=_with(order3["association"], products=[]))),
        ("work.stage3", "stage-2 order on the stage-3 topic", _with(order3, stage="stage2")),
        ("work.stage3", "stage-3 order whose header copy is not its members' (another filter)",
         _with(order3, header=forged_filter3)),
        ("work.stage3", "stage-3 order whose step parameters run a shell command",
         _with(order3, parameters={**order3.get("parameters", {}), "steps": hooked3})),
        ("work.stage3.replay", "stage-3 replay order without a replay",
         _with(order3, priority="replay", namespace="evil3")),
        ("products", "product with no inputs", _with(product2, inputs=[], event_id="3" * 64)),
        ("products", "product whose outputs are /etc/passwd",
         _with(product, outputs=out_escape, event_id="4" * 64)),
        ("products", "product whose outputs climb out of the store",
         _with(product, outputs=out_traversal, event_id="5" * 64)),
        ("products", "product in a namespace with live inputs and no replay",
         _with(product2, namespace="evil", event_id="6" * 64)),
        ("products", "product reusing an event id with other content",
         _with(product2, pipeline="calwebb_spec2")),
        ("products", "product whose name is not its exposure",
         _with(product2, exposure_id="jw01234001001_02101_00088_nrcb1", event_id="7" * 64)),
        ("products", "product whose program is not its name's",
         _with(product2, program="09999", event_id="8" * 64)),
        ("pointing", "pointing update for an unknown exposure",
         {"schema": "calstream.pointing_update", "schema_version": "1.1", "event_id": "9" * 64,
          "emitted_at": arrival["emitted_at"], "exposure_id": "jw09999001001_02101_00001_nrcb1",
          "action": "release", "reason": "forged"}),
        ("pointing", "pointing correction with an impossible declination",
         {"schema": "calstream.pointing_update", "schema_version": "1.1", "event_id": "a" * 64,
          "emitted_at": arrival["emitted_at"], "exposure_id": planned_arrival["exposure_id"],
          "action": "correct", "keywords": {"ENGQLPTG": "CALCULATED", "DEC_V1": 95.0}}),
        ("plans", "plan whose exposures are not exposure ids",
         {"schema": "calstream.plan", "schema_version": "1.1", "event_id": "b" * 64,
          "emitted_at": arrival["emitted_at"], "plan_id": "c" * 64, "programs": ["01234"],
          "exposures": ["../../etc/passwd", 5, None]}),
        ("plans", "plan for no program",
         {"schema": "calstream.plan", "schema_version": "1.1", "event_id": "d" * 64,
          "emitted_at": arrival["emitted_at"], "plan_id": "e" * 64, "programs": [],
          "exposures": []}),
    ]
    out = [BadMessage(f"{topic}: {name}", topic, _json(body)) for topic, name, body in items]
    stale = _with(order2, inputs=[dict(i, digest="sha256:" + "0" * 64) for i in order2["inputs"]])
    out.append(BadMessage("work.stage2: order whose input digest is not its file's",
                          "work.stage2", _json(stale), expect="stale"))
    return out


def hold_garbage(template: dict[str, Any]) -> list[BadMessage]:
    """Garbage on the planner's own compacted topic, read back at start-up."""
    return [
        BadMessage("holds: not json", "holds", b"{garbage"),
        BadMessage("holds: a product on the holds topic", "holds",
                   _json({**template, "schema": "calstream.product"})),
        BadMessage("holds: a hold without a digest", "holds",
                   _json({k: v for k, v in template.items() if k != "digest"})),
    ]


# ---------------------------------------------------------------- files

_PROGRAM = "01234"


def _name(exposure: int, suffix: str = "uncal", segment: str = "") -> str:
    return f"jw{_PROGRAM}050001_02101_{exposure:05d}{segment}_nrcb1_{suffix}.fits"


def _header(exposure: int, **changes: Any) -> dict[str, Any]:
    return {**SMALL_UNCAL_HEADER, "OBSERVTN": "050", "EXPOSURE": f"{exposure:05d}", **changes}


def _uncal(exposure: int, data: np.ndarray | None = None, **changes: Any) -> bytes:
    data = np.zeros((1, 2, 16, 16), dtype=np.uint16) if data is None else data
    return small_uncal(_header(exposure, **changes), data)


def _set_card(blob: bytes, key: str, raw_value: str) -> bytes:
    start = blob.index(key.ljust(8).encode() + b"= ")
    card = (key.ljust(8) + "= " + raw_value.rjust(20)).ljust(80).encode()
    return blob[:start] + card + blob[start + 80:]


def _with_cards(blob: bytes, **cards: Any) -> bytes:
    """``blob`` (a FITS file) with these primary header cards changed."""
    import io

    from astropy.io import fits

    with fits.open(io.BytesIO(blob)) as hdul:
        hdul[0].header.update(cards)
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue()


def bad_files(good_uncal: Path, sentinel: Path) -> list[BadFile]:
    """Files that are not whole, possible exposures (each with its own name)."""
    good = good_uncal.read_bytes()
    files: list[tuple[str, str, Callable[[Path], None]]] = []

    def blob(desc: str, name: str, data: bytes) -> None:
        files.append((desc, name, lambda inbox, n=name, d=data: (inbox / n).write_bytes(d)))

    blob("empty file", _name(101), b"")
    blob("text file", _name(102), b"SIMPLE = T is what a FITS file starts with, not this\n" * 40)
    blob("gzip of a good file", _name(103), gzip.compress(good, 1))
    blob("half a good file", _name(104), good[: len(good) // 2])
    blob("all zero bytes", _name(105), bytes(len(good)))
    blob("name is not a JWST name", "evil_uncal.fits", _uncal(106))
    blob("not an uncal suffix", _name(107, "rate"), _uncal(107))
    blob("name and header disagree", _name(108), _uncal(109))
    blob("required keyword missing", _name(110), _uncal(110, ENGQLPTG=None))
    blob("NGROUPS = NaN", _name(111), _set_card(_uncal(111), "NGROUPS", "NaN"))
    blob("NEXPOSUR = inf", _name(112), _set_card(_uncal(112), "NEXPOSUR", "inf"))
    blob("NGROUPS = 0", _name(113), _uncal(113, NGROUPS=0))
    blob("NEXPOSUR = -5", _name(114), _uncal(114, NEXPOSUR=-5))
    blob("NGROUPS = 1e20", _name(115), _uncal(115, NGROUPS=1e20))
    blob("NINTS = 1e12", _name(116), _uncal(116, NINTS=10**12))
    blob("3 groups of data with NGROUPS = 5", _name(117),
         _uncal(117, np.zeros((1, 3, 16, 16), np.uint16), NGROUPS=5))
    blob("a 2-D SCI array", _name(118), _uncal(118, np.zeros((16, 16), np.uint16)))
    blob("segment number disagrees with the name", _name(119, segment="-seg002"),
         _uncal(119, EXSEGNUM=1, EXSEGTOT=2))
    blob("BITPIX = 7", _name(120), _set_card(good, "BITPIX", "7"))
    blob("NGROUPS is a string", _name(121), _set_card(_uncal(121), "NGROUPS", "'five'"))
    blob("unicode in the name", _name(122).replace("nrcb1", "nrcb\u00fc"), _uncal(122))
    blob("a newline in the name", _name(123).replace("_uncal", "\nFAKE log line_uncal"),
         _uncal(123))
    blob("dots in the name", "jw..050001_02101_00124_nrcb1_uncal.fits", _uncal(124))

    # Whole and possible, but observed before every reference of the context:
    # CRDS's rules name no superbias for it (steps/failures.py).
    early = good_uncal.name.replace(good_uncal.name[:13], f"jw{_PROGRAM}060001")
    blob("observed before every reference (DATE-OBS 2021)", early,
         _with_cards(good, OBSERVTN="060", **{"DATE-OBS": "2021-06-01"}))

    def sparse(inbox: Path) -> None:
        with open(inbox / _name(125), "wb") as fh:
            fh.truncate(len(good))

    files += [
        ("sparse file", _name(125), sparse),
        ("symlink to /etc/passwd", _name(126),
         (lambda inbox: os.symlink("/etc/passwd", inbox / _name(126)))),
        ("symlink outside the roots", _name(127),
         (lambda inbox: os.symlink(sentinel / "note.txt", inbox / _name(127)))),
        ("a directory", _name(128), (lambda inbox: (inbox / _name(128)).mkdir())),
        ("a FIFO", _name(129), (lambda inbox: os.mkfifo(inbox / _name(129)))),
    ]
    return [BadFile(desc, name, write) for desc, name, write in files]
