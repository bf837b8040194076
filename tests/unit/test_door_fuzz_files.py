"""The door fuzz (tests/door_fuzz.py) on the files calstream reads that
another party can write.

An uncal file in the inbox (its header cards), a plan file (`calstream plan
load`: a manifest or a pool), the planner's ledger, its snapshot, the
product store's provenance and failure records, the console's promotion
records, the work claims of other daemons, the deployment record. Each file
is written mutated into real tmp directories and read by the code that reads
it; it must be taken, or refused with a reason (None, a warning, the
door's own error), never raise anything else or hang; and a valid file
read right after must still be read as valid.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import anyio
import numpy as np
import pytest

from calstream.daemon.deciders import ledger_names
from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid
from calstream.daemon.deciders.work_claims import Owner
from calstream.daemon.doers import planner_restore, planner_snapshots
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.daemon.operations import console_pages, deployment
from calstream.daemon.operations.config import ConfigError, load
from calstream.daemon.operations.console_data import Snapshot, _promotions
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.exposure import BadExposure, describe_exposure, header_copy_problems
from calstream.steps.fitsfile import fits_layout
from calstream.steps.plans import PlanError, PlannedExposure, plan_digest
from calstream.topics import contract
from calstream.topics.catalog import Topics

from ..door_fuzz import bounded, budget, first_seed, fuzz, mutated_bytes, mutated_name
from . import planner_stream as stream
from .test_door_fuzz_planner import _orders_and_holds
from .test_door_rules_agree import _arrival
from .test_exposure import write
from .test_forged_updates_and_plans import _plan_message
from .test_forged_work_records import _Producer
from .test_provenance_records import KW, NAME, publish


def _put(path: Path, raw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(raw)


@pytest.mark.filterwarnings("ignore")  # astropy warns of the mutants' cards as it reads them
def test_uncal_header_cards_mutated_are_quarantined_or_announced(tmp_path):
    """The watcher's reads (doers/inbox/watcher.py): the layout, then the
    identity; what it announces, its arrival must carry and the planner's
    intake must accept (tests/unit/test_door_rules_agree.py's rule), and
    astropy must read as the door checked it."""
    (tmp_path / "good").mkdir()
    good = write(tmp_path / "good")
    valid = good.read_bytes()
    header_end = valid.index(b"END" + b" " * 77) + 80
    rng = random.Random(f"uncal:{first_seed()}")
    cards = [valid[i:i + 80] for i in range(0, header_end, 80)]
    values = [b"= 'unterminated", b"= NaN", b"= 1e999", b"= -1", b"= 99999999999999999999",
              b"= T", b"= (1, 2)", b"= '\xe9\xff'", b"= '\x00'", b"= ''", b"= 'a' / x",
              b"=", b"= 2026-05-26", b"= '../../x'", b"= 1.5", b"= 0"]
    counts = {"refused": 0, "accepted": 0}
    path = tmp_path / good.name
    for case in range(budget(300)):
        raw = bytearray(valid)
        how = rng.random()
        if how < 0.5:  # a card's value replaced
            at = rng.randrange(1, len(cards) - 1) * 80
            new = (raw[at:at + 8] + rng.choice(values)).ljust(80, b" ")[:80]
            raw[at:at + 80] = new
        elif how < 0.6:  # a card twice, or END gone
            at = rng.randrange(1, len(cards) - 1) * 80
            raw[at:at + 80] = cards[rng.randrange(1, len(cards) - 1)] if rng.random() < 0.7 \
                else b" " * 80
        else:
            raw = bytearray(mutated_bytes(bytes(raw[:header_end]), rng)) + raw[header_end:] \
                if how < 0.85 else raw[:rng.randrange(len(raw))]
        what = f"uncal case {case}"
        info, changed = _mutant_at_door(path, valid, raw, what, counts)
        if info is not None:
            _arrival(info)
            assert header_copy_problems(info.name, info.header) == [], case
            _read_as_checked(path, info, what, changed)
    assert counts["refused"] and counts["accepted"], counts


def _changed(valid: bytes, raw: bytes | bytearray) -> list[bytes]:
    """The cards a mutant changed, for a failure's message."""
    return [bytes(raw[i:i + 80]).rstrip() for i in range(0, len(valid), 80)
            if raw[i:i + 80] != valid[i:i + 80]][:6]


def _mutant_at_door(path: Path, valid: bytes, raw: bytes | bytearray, case: str,
                    counts: dict[str, int]):
    """``raw`` written at ``path`` and through the door: (its ExposureInfo
    or None, the cards changed from ``valid``), counted refused or accepted."""
    _put(path, bytes(raw))
    cards = _changed(valid, raw)
    info = _door(path, case, cards)
    counts["refused" if info is None else "accepted"] += 1
    return info, cards


def _door(path: Path, case: str, cards: list[bytes]):
    """The watcher's reads of an uncal file (the walk, then the identity):
    its ExposureInfo, or None where the door refuses it. Anything else it
    raises, or a read that does not end, fails the case."""
    try:
        with bounded(60):  # TFIELDS = 99999999 held astropy's open for minutes
            if not fits_layout(path).complete:
                return None
            return describe_exposure(path)
    except (BadExposure, OSError):  # OSError: quarantined after a few tries (after_read_error)
        return None
    except Exception as exc:
        raise AssertionError(f"{case}: {type(exc).__name__}: {exc}; cards {cards}") from exc


def _read_as_checked(path: Path, info, case: str, cards: list[bytes],
                     shape: tuple[int, ...] | None = None) -> None:
    """An accepted uncal file opens in astropy (jwst's reader), which reads
    its SCI pixels (stdatamodels asks for ``("SCI", 1)``) in the shape the
    door checked (``shape``; by default the axes the walk read from the SCI
    image's cards)."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            read = hdul["SCI", 1].data.shape
    except Exception as exc:
        raise AssertionError(f"{case}: accepted, but astropy reads no SCI array: "
                             f"{type(exc).__name__}: {exc}; cards {cards}") from exc
    if shape is None:
        sci = next(h for h in fits_layout(path).hdus if h.key == ("SCI", 1))
        shape = tuple(reversed(sci.axes))
    assert read == shape, (case, cards)
    assert read[:2] == (info.header["NINTS"], info.header["NGROUPS"]), (case, cards)


@pytest.mark.filterwarnings("ignore")  # astropy warns of the mutants' cards as it reads them
def test_uncal_structural_cards_mutated_are_refused_or_read_as_jwst_reads_them(tmp_path):
    """The walk reads the cards astropy makes each HDU from (not astropy),
    and the SCI axes with them; so a mutant of any header must be refused,
    or open with astropy (jwst's reader) and give the SCI array the door
    checked: the same axes, pixels that can be read."""
    (tmp_path / "good").mkdir()
    good = write(tmp_path / "good")
    valid = good.read_bytes()
    headers = [(h.header_offset, h.data_offset) for h in fits_layout(good).hdus]
    rng = random.Random(f"uncal structure:{first_seed()}")
    keys = [b"NAXIS   ", b"NAXIS1  ", b"NAXIS2  ", b"NAXIS4  ", b"BITPIX  ", b"EXTNAME ",
            b"XTENSION", b"PCOUNT  ", b"GCOUNT  ", b"BZERO   ", b"BSCALE  ", b"EXTEND  ",
            b"BLANK   ", b"EXTVER  ", b"GROUPS  ", b"        "]
    values = [b"= 'unterminated", b"= NaN", b"= 1e999", b"= -1", b"= 0", b"= 1.5", b"= 2",
              b"= 16", b"= -32", b"= 7", b"= T", b"= (1, 2)", b"= ''", b"=", b"= 'SCI'",
              b"= 'sci '", b"= 'IMAGE'", b"= 'BINTABLE'", b"= 'TABLE'", b"= '16'", b"= 1_6",
              b"= 1.6E2", b"= 3.2768D4"]
    counts = {"refused": 0, "accepted": 0}
    path = tmp_path / good.name
    for case in range(budget(300)):
        raw = bytearray(valid)
        start, end = rng.choice(headers)
        for _ in range(rng.choice((1, 1, 2, 3))):
            at, how = rng.randrange(start, end, 80), rng.random()
            if how < 0.45:  # a card's value
                raw[at:at + 80] = (raw[at:at + 8] + rng.choice(values)).ljust(80)[:80]
            elif how < 0.8:  # a structural keyword written where another card was
                raw[at:at + 80] = (rng.choice(keys) + rng.choice(values)).ljust(80)[:80]
            else:  # the header's bytes mutated, its length kept
                raw[start:end] = mutated_bytes(bytes(raw[start:end]), rng).ljust(
                    end - start)[:end - start]
        what = f"uncal structure case {case}"
        info, cards = _mutant_at_door(path, valid, raw, what, counts)
        if info is not None:
            _read_as_checked(path, info, what, cards)
    assert counts["refused"] and counts["accepted"], counts


@pytest.mark.filterwarnings("ignore")  # astropy warns of the mutants' cards as it reads them
def test_a_compressed_sci_mutated_is_refused_or_read_as_jwst_reads_it(tmp_path, monkeypatch):
    """A tile-compressed SCI: its table's keywords (ZCMPTYPE, ZTILEn, the
    heap's PCOUNT, ...) and its tiles' descriptors are read only with the
    pixels, so the door reads them (steps/compressed_sci.py,
    steps/tile_table.py); a mutant is refused, or astropy reads
    the SCI array the door checked, and never holds the door for long."""
    from astropy.io import fits

    from calstream.steps import compressed_sci
    from calstream.steps.synthetic.headers import asdf_extension

    from .test_exposure import _with_extensions

    # One plane a read, as a full frame's reads go: a read of the
    # whole image, astropy cuts to the heap; a read of part of it, not.
    monkeypatch.setattr(compressed_sci, "MAX_READ_BYTES", 16 * 16 * 2)
    cube = np.random.default_rng(0).integers(0, 60000, (1, 2, 16, 16)).astype(np.uint16)
    (tmp_path / "good").mkdir()
    good = _with_extensions(tmp_path / "good", fits.CompImageHDU(cube, name="SCI"),
                            asdf_extension())
    valid = good.read_bytes()
    table = fits_layout(good).hdus[1]
    start, end = table.header_offset, table.data_offset
    keys = [valid[i:i + 8] for i in range(start, end, 80) if valid[i + 8:i + 10] == b"= "]
    rows = 2 * 16  # tiles: rows of 16 pixels, two planes (one descriptor of 8 bytes each)
    heap = table.data_size - 8 * rows  # past it, astropy's plane reads go on into the ASDF HDU
    values = [b"= 0", b"= -1", b"= 1", b"= 2", b"= 7", b"= 16", b"= -32", b"= 99999999",
              b"= 'BOGUS'", b"= 'RICE_1'", b"= 'GZIP_1'", b"= 'HCOMPRESS_1'", b"= 'PLIO_1'",
              b"= 'NOCOMPRESS'", b"= T", b"= NaN", b"= 1.5", b"= '1QB(10)'", b"= 'x'", b"= 2880"]
    rng = random.Random(f"compressed sci:{first_seed()}")
    counts = {"refused": 0, "accepted": 0}
    path = tmp_path / good.name
    for case in range(budget(200)):
        raw = bytearray(valid)
        for _ in range(rng.choice((1, 1, 2))):
            at = rng.randrange(start, end, 80)
            if rng.random() < 0.1:  # a tile moved past the heap, into the padding:
                # whole reads cut the heap at PCOUNT, plane reads took it
                row = end + 8 * rng.randrange(rows)
                count, offset = struct.unpack(">ii", valid[row:row + 8])
                to = heap + rng.randrange(0, 64)
                raw[end + 8 * rows + to:end + 8 * rows + to + count] = valid[
                    end + 8 * rows + offset:end + 8 * rows + offset + count]
                raw[row:row + 8] = struct.pack(">ii", count, to)
            elif rng.random() < 0.2:  # a tile's descriptor (count, heap offset) forged
                row = end + 8 * rng.randrange(rows) + rng.choice((0, 4))
                raw[row:row + 4] = rng.choice((-1, 0, 1, 7, 300, heap - 8, heap + 8, heap + 2880,
                                               2**20, 2**31 - 1)).to_bytes(4, "big", signed=True)
            elif rng.random() < 0.75:  # a keyword of the table's given another value
                raw[at:at + 80] = (rng.choice(keys) + rng.choice(values)).ljust(80)[:80]
            else:
                raw[start:end] = mutated_bytes(bytes(raw[start:end]), rng).ljust(
                    end - start)[:end - start]
        what = f"compressed case {case}"
        info, cards = _mutant_at_door(path, valid, raw, what, counts)
        if info is not None:  # held to the primary's counts and SUBSIZEn by the door
            _read_as_checked(path, info, what, cards, shape=(1, 2, 16, 16))
    assert counts["refused"] and counts["accepted"], counts


@pytest.mark.parametrize("kind", ["manifest", "pool"])
def test_a_plan_file_mutated_is_loaded_or_refused(tmp_path, kind):
    """`calstream plan load FILE`: PlanError says why, or the plan's message builds."""
    from calstream.daemon.operations.cli.plans import plan_message

    exposures = [{"exposure_id": f"jw01234001001_02101_0000{n}_nrcb1",
                  "candidates": ["o001", "c1000"],
                  "header": {"EXP_TYPE": "NRC_IMAGE", "FILTER": "F150W", "NEXPOSUR": 4}}
                 for n in range(1, 5)]
    if kind == "manifest":
        valid = {"exposures": exposures}
        encode = json.dumps
    else:
        valid = [["FILENAME", "EXP_TYPE", "FILTER", "ASN_CANDIDATE"]] + [
            [e["exposure_id"] + "_uncal.fits", "NRC_IMAGE", "F150W", "[('o001', 'observation')]"]
            for e in exposures]
        encode = lambda rows: "\n".join("|".join(map(str, r)) for r in rows)  # noqa: E731
    path = tmp_path / f"plan.{'json' if kind == 'manifest' else 'csv'}"
    path.write_text(encode(valid))
    plan_message(path, "ops")

    def take(raw: bytes) -> str:
        if kind == "pool":  # a pool is text: the mutant's JSON read back as its rows
            try:
                rows = json.loads(raw)
                raw = encode(rows).encode("utf-8", "surrogatepass") if isinstance(
                    rows, list) and all(isinstance(r, list) for r in rows) else raw
            except (ValueError, RecursionError, TypeError):
                pass
        _put(path, raw)
        try:
            plan_message(path, "ops")
        except PlanError:
            return "refused"
        return "accepted"

    counts = fuzz(f"plan file ({kind})", valid, take, seed=first_seed(), cases=budget(200))
    assert counts.get("refused") and counts.get("accepted"), counts


def _planner(tmp_path: Path):
    from .test_planner_snapshot import _planner as planner

    made = planner(tmp_path)
    made.publisher = Publisher(_Producer(), Topics(), Metrics())  # decodes what it is given
    made.cfg.products = tmp_path / "products"
    return made


@pytest.mark.parametrize("topic", ["plans", "holds"])
def test_the_planner_ledger_mutated_is_taken_or_left_out(tmp_path, topic):
    """What a start takes from <work>/planner/ (planner_disk_records.restore_from_disk):
    every message it re-publishes must be one its readers accept. The file's
    name is mutated too: one that is not ``<key>.json`` for a valid key is
    never read ("misnamed"), and a record is taken only under its own key."""
    if topic == "plans":
        [plan] = [p for k, p, _ in stream.steps() if k == "plan"]
        forged_from = _plan_message(plan).body
        # The valid one read after it: another plan (other candidates), its own
        # file, its id its content's digest (Plan.from_json checks it).
        exposures = [{**e, "candidates": ["o999"]} for e in forged_from["exposures"]]
        other = plan_digest([PlannedExposure(e["exposure_id"], ("o999",)) for e in exposures])
        valid = contract.build("plan", contract.event_id("plan", other), **{
            **{k: forged_from[k] for k in ("source", "by", "programs")},
            "exposures": exposures, "plan_id": other}).body
    else:
        forged_from, valid = (h.body for h in _orders_and_holds()["hold"][:2])
    key = "plan_id" if topic == "plans" else "exposure_id"
    assert forged_from[key] != valid[key]
    ledger = PlannerLedger(tmp_path)
    names = random.Random(f"ledger names {topic}:{first_seed()}")  # one draw a case, in order

    def take(raw: bytes) -> str:
        # An empty ledger each case: a restore keeps each hold it took under
        # its own name, and those would be re-published in every later case
        # and counted as the mutant taken (seed 10: no mutant ever refused).
        shutil.rmtree(ledger.root, ignore_errors=True)
        name = mutated_name(f"{forged_from[key]}.json", names)
        _put(ledger.root / topic / name, raw)
        _put(ledger.root / topic / f"{valid[key]}.json", json.dumps(valid).encode())
        planner = _planner(tmp_path)
        anyio.run(planner._restore_from_disk)
        sent = planner.publisher.producer.sent
        assert any(m.event_id == valid["event_id"] for _, m in sent), "the valid one was not restored"
        assert len(sent) <= 2, f"{len(sent)} records re-published from two files"
        if ledger_names.key_of(name) is None:
            assert len(sent) == 1, f"a file named {name!r} was read"
            return "misnamed"
        return "accepted" if len(sent) == 2 else "refused"

    counts = fuzz(f"ledger {topic}", forged_from, take, seed=first_seed(), cases=budget(150))
    assert counts.get("refused") and counts.get("accepted") and counts.get("misnamed"), counts


def test_the_deployment_record_mutated_is_used_or_ignored(tmp_path):
    valid = {"pid": os.getpid(), "host": "elsewhere", "started_at": "2026-01-01T00:00:00Z",
             "kafka_bootstrap": "127.0.0.1:1", "embedded_broker": True,
             "metrics_address": "127.0.0.1:1", "topic_prefix": "calstream.",
             "group_prefix": "calstream", "products": str(tmp_path / "products"),
             "roles": ["planner"]}
    cfg = load(None, env={}, flags={"work_dir": tmp_path})

    def take(raw: bytes) -> str:
        _put(deployment.record_path(tmp_path), raw)
        doc = deployment.read(tmp_path)
        if doc is None:
            return "refused"
        try:
            deployment.discover(cfg)
        except ConfigError:
            return "stale"
        return "accepted"

    counts = fuzz("deployment record", valid, take, seed=first_seed(), cases=budget(150))
    assert counts.get("refused") and counts.get("stale"), counts


def test_a_provenance_record_mutated_is_used_or_counts_as_absent(tmp_path):
    store = ProductStore(tmp_path / "store")
    record_path, valid = publish(store)
    rate = Path(valid["event"]["outputs"][0]["path"])
    failed = store.directory("01234", "001") / ".failed" / f"{NAME}.detector1.json"

    def take(raw: bytes) -> str:
        _put(record_path, raw)
        _put(failed, raw)
        found = store.lookup("01234", "001", **KW)
        store.records()
        store.announced(rate)
        store.has_input("01234", "001", NAME, "detector1", "sha256:" + "1" * 64)
        store.has_failed("01234", "001", NAME, "detector1", "sha256:1")
        store.record_failure("01234", "001", name=NAME, stage="detector1", digest="sha256:1",
                             reason="bad")
        assert store.has_failed("01234", "001", NAME, "detector1", "sha256:1")
        return "accepted" if found is not None else "refused"

    def again() -> None:
        _put(record_path, json.dumps(valid).encode())
        assert store.lookup("01234", "001", **KW) is not None

    counts = fuzz("provenance record", valid, take, after=again, seed=first_seed(),
                  cases=budget(200), paths=[str(tmp_path / "elsewhere"), "/etc/hostname"])
    assert counts.get("refused") and counts.get("accepted"), counts


def test_a_promotion_record_mutated_is_shown_or_left_out(tmp_path):
    store = ProductStore(tmp_path / "products")
    valid = {"schema": "calstream.promotion", "schema_version": "1.4", "event_id": "a" * 64,
             "emitted_at": "2026-01-01T00:00:00.000Z", "namespace": "ctx1", "previous": "live",
             "current_link": str(store.top / "current"), "promoted_at": "2026-01-01T00:00:00.000Z",
             "reason": "better flats", "by": "ops", "tree": str(store.top), "records": 3,
             "replays": [], "crds_contexts": ["jwst_0001.pmap"]}
    where = store.top / "promotions" / "20260101T000000.000Z-ctx1.json"

    def take(raw: bytes) -> str:
        _put(where, raw)
        promotions = _promotions(store)
        console_pages.index(Snapshot(0.0, "live", {}, None, ["live"], "live", promotions, []))
        return "accepted" if promotions else "refused"

    counts = fuzz("promotion record", valid, take, seed=first_seed(), cases=budget(150))
    assert counts.get("refused") and counts.get("accepted"), counts


def test_a_claim_mutated_is_judged_without_raising(tmp_path):
    claims = WorkClaims(tmp_path / "products", heartbeat_seconds=5, stale_seconds=60)
    path = claims.path("a" * 64, 1)
    other = Owner("elsewhere", 12345, "t" * 16).as_record()
    valid = {**other, "since": 1_800_000_000.0, "stage": "stage2", "name": NAME}

    def take(raw: bytes) -> str:
        _put(path, raw)
        verdict, _, owner = claims.look(path)
        return "owned" if owner is not None else "garbage"

    counts = fuzz("work claim", valid, take, seed=first_seed(), cases=budget(150))
    assert counts.get("owned") and counts.get("garbage"), counts


def _resealed(path: Path, envelope: dict, body: bytes, blocks: bytes) -> None:
    """A snapshot whose envelope says what its bytes are: a forger who knows
    the format (its sha256 is of the bytes, not a signature)."""
    stored = zlib.compress(body)
    data = stored + blocks
    import hashlib
    envelope = {**envelope, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "raw_size": len(body)}
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + data)


def _sealed_body(tmp_path: Path):
    """A real snapshot's parts: (its stream and cut, envelope, body, blocks)."""
    from .test_planner_snapshot import _snapshot_at_half

    recorded, _, _, cut = _snapshot_at_half(tmp_path)
    head, data = planner_snapshots.snapshot_path(tmp_path).read_bytes().split(b"\n", 1)
    envelope = json.loads(head)
    block_bytes = sum(s[0] for s in envelope.get("blocks") or [])
    blocks = data[len(data) - block_bytes:] if block_bytes else b""
    body = zlib.decompressobj().decompress(data[:len(data) - block_bytes])
    return recorded, cut, envelope, body, blocks


@pytest.mark.parametrize("field", ["plan_headers", "replay"])
def test_a_sealed_snapshot_with_a_field_of_another_type_is_ignored(tmp_path, field):
    """Restored as they were, plan headers or a replay that are text raised
    AttributeError out of the next decision, on a valid event, or out of
    every tick (door fuzz, seeds 2 and 3)."""
    recorded, cut, envelope, body, blocks = _sealed_body(tmp_path)
    forged = json.loads(body)
    for state in forged["namespaces"].values():
        state[field] = "x"
    _resealed(planner_snapshots.snapshot_path(tmp_path), envelope, json.dumps(forged).encode(),
              blocks)
    planner = _planner(tmp_path / "p")
    planner.cfg.work_dir = tmp_path
    assert planner_restore.load_snapshot(planner) is False
    stream.play(planner.state, recorded)


@pytest.mark.parametrize("part", ["envelope", "body"])
def test_a_snapshot_mutated_is_used_or_ignored(tmp_path, part):
    recorded, cut, envelope, body, blocks = _sealed_body(tmp_path)
    path = planner_snapshots.snapshot_path(tmp_path)
    data = path.read_bytes().split(b"\n", 1)[1]
    valid = envelope if part == "envelope" else json.loads(body)

    def take(raw: bytes) -> str:
        if part == "envelope":
            path.write_bytes(raw.replace(b"\n", b" ") + b"\n" + data)
        else:
            _resealed(path, envelope, raw, blocks)
        planner = _planner(tmp_path / "p")
        planner.cfg.work_dir = tmp_path
        try:
            used = planner_restore.load_snapshot(planner)
            rest = recorded[cut:] if used else recorded
            stream.play(planner.state, rest)
        except SnapshotInvalid:  # read late (a block, a record): the planner rebuilds
            return "rebuilt"
        return "used" if used else "ignored"

    counts = fuzz(f"snapshot {part}", valid, take, seed=first_seed(),
                  cases=budget(60 if part == "body" else 120))
    assert counts.get("ignored"), counts


@pytest.mark.filterwarnings("ignore")  # astropy and stdatamodels warn of the mutants' cards
def test_a_real_uncal_mutated_is_refused_or_opens_in_stdatamodels(tmp_path):
    """Mutants of an uncal file stdatamodels wrote (its cards of every
    header: values, forms, CONTINUE, END): what the door accepts, jwst's
    reader opens, ASDF tree and all; before the card and table checks
    (steps/fits_cards.py, steps/uncal_tables.py) 1 in 30 did not."""
    from stdatamodels.jwst import datamodels

    from calstream.steps.synthetic.program import simulate_program

    source = sorted(simulate_program(tmp_path / "source", seed=1))[0]
    valid = source.read_bytes()
    headers = [(h.header_offset, h.data_offset) for h in fits_layout(source).hdus]
    values = [b"= 0", b"= -1", b"= 'x'", b"= T", b"= NaN", b"= 1.5", b"= ''", b"= 7"]
    rng = random.Random(f"stdatamodels:{first_seed()}")
    path = tmp_path / source.name
    counts = {"refused": 0, "accepted": 0}
    for case in range(budget(40)):
        raw = bytearray(valid)
        start, end = rng.choice(headers)
        at = rng.randrange(start, end, 80)
        how = rng.random()
        if how < 0.5:
            raw[at:at + 80] = (bytes(raw[at:at + 8]) + rng.choice(values)).ljust(80)
        elif how < 0.8:
            raw[at:at + 80] = mutated_bytes(bytes(raw[at:at + 80]), rng).ljust(80)[:80]
        else:
            raw[at:at + 80] = rng.choice([b"CONTINUE  junk", b"COMMENT", b"END"]).ljust(80)
        what = f"stdatamodels case {case}"
        info, cards = _mutant_at_door(path, valid, raw, what, counts)
        if info is not None:
            try:
                with datamodels.open(str(path)) as model:
                    assert model.data.ndim == 4
            except Exception as exc:  # noqa: BLE001 - any failure is the case's
                raise AssertionError(f"{what}: accepted, but stdatamodels cannot open it: "
                                     f"{type(exc).__name__}: {exc}; cards {cards}") from exc
    assert counts["refused"] and counts["accepted"], counts
