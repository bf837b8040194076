"""The console's pages, from a product store and a status snapshot (no daemon)."""

from __future__ import annotations

import time

from calstream.daemon.operations import console_pages
from calstream.daemon.operations.config import load
from calstream.daemon.operations.console import Console
from calstream.daemon.operations.console_data import (
    Observation,
    Snapshot,
    index_broker,
    index_records,
)
from calstream.daemon.operations.status_summary import BrokerView, Status


def _eid(n: int) -> str:
    return f"jw01234001001_02101_{n:05d}_nrcb1"


def _event(n: int, stage: str, previews=None) -> dict:
    return {"event": {"stage": stage, "program": "01234", "observation": "001",
                      "exposure_id": _eid(n), "product_name": _eid(n), "outcome": "success",
                      "arrived_at": "2026-11-24T05:00:00.000Z",
                      "emitted_at": f"2026-11-24T05:0{1 if stage == 'detector1' else 2}:00.000Z",
                      "duration_seconds": 3.5, "previews": previews or []}}


def _snapshot(index, status=None) -> Snapshot:
    return Snapshot(time.time(), "live", index, status, ["live", "ctx2"], "live", [
        {"namespace": "ctx2", "previous": "live", "promoted_at": "2026-11-24T06:00:00Z",
         "reason": "new flats", "by": "ops", "records": 3}], [], None)


def test_ten_thousand_exposures_are_paged():
    records = [_event(n, s) for n in range(1, 10001) for s in ("detector1", "stage2")]
    records.append({"event": {"stage": "stage3", "program": "01234", "observation": "001",
                              "product_name": "jw01234-o001_t001_nircam_clear-f200w",
                              "emitted_at": "2026-11-24T05:05:00Z", "association": {
                                  "members": [{"expname": f"{_eid(1)}_cal.fits"}]}}})
    index: dict = {}
    index_records(records, index)
    obs = index[("01234", "001")]
    assert obs.counts()["exposures"] == 10000 and obs.counts()["stage2"] == 10000
    assert obs.exposures[_eid(1)].stage3 == ["jw01234-o001_t001_nircam_clear-f200w"]
    assert obs.exposures[_eid(1)].latency == 120.0
    html = console_pages.observation_page(_snapshot(index), obs, {"page": ["3"]}).decode()
    assert "page 3 of 100" in html
    assert _eid(201) in html and _eid(300) in html
    assert _eid(200) not in html and _eid(301) not in html
    assert html.count('<tr class="') <= console_pages.PAGE_SIZE + 5


def test_holds_dead_letters_missing_and_waiting_associations():
    index: dict = {}
    index_records([_event(1, "detector1")], index)
    broker = BrokerView("h:1")
    broker.holds = [{"exposure_id": _eid(1), "state": "held", "since": "2026-11-24T05:01:00Z",
                     "reason": "ENGQLPTG=PLANNED: provisional pointing"}]
    broker.dead_letters = [{"exposure_id": _eid(2), "stage": "detector1", "category":
                            "permanent_failure", "reason": "calwebb_detector1 failed: boom",
                            "emitted_at": "2026-11-24T05:03:00Z", "attempts": 1}]
    view = {"namespaces": {"live": {
        "stage2_waiting": {},
        "stage3": {"missing": {_eid(3): {"since": time.time() - 60,
                                         "candidates": ["jw01234-o001_image3"]}},
                   "candidates": [{"candidate": "jw01234-o001_image3", "asn_type": "image3",
                                   "members": 2, "missing": [_eid(3)],
                                   "waiting_for": {"members": "1 missing"}}]}}}}
    status = Status(time.time(), "p.", "p", [], {}, broker, {"view": view})
    index_broker(status, "live", index)
    obs: Observation = index[("01234", "001")]
    html = console_pages.observation_page(_snapshot(index, status), obs, {}).decode()
    assert "held: ENGQLPTG=PLANNED: provisional pointing" in html
    assert "calwebb_detector1 failed: boom" in html
    assert _eid(3) in html and "Missing exposures (1)" in html
    assert "stage 3 jw01234-o001_image3 (image3, 2 member(s))" in html
    front = console_pages.index(_snapshot(index, status)).decode()
    assert "/console/program/01234/001" in front and "new flats" in front


def test_the_console_serves_only_previews_from_the_store(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    previews = cfg.products / "01234" / "001" / "previews"
    previews.mkdir(parents=True)
    (previews / "x_thumb.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.png").write_bytes(b"no")
    console = Console(cfg, lambda: [])
    assert console.handle("/metrics") is None
    code, body, ctype = console.handle(f"/console/preview?path={previews / 'x_thumb.png'}")
    assert (code, ctype) == (200, "image/png") and body.startswith(b"\x89PNG")
    assert console.handle(f"/console/preview?path={tmp_path / 'secret.png'}")[0] == 404
    assert console.handle(f"/console/preview?path={previews}/../../../../secret.png")[0] == 404
    code, body, _ = console.handle("/console/")
    assert code == 200 and b"calstream console" in body
    assert console.handle("/console/program/09999/001")[0] == 404
    assert console.handle("/console/?ns=../etc")[0] == 400


def test_parked_items_are_summed_by_stage_and_cause_for_status_and_console():
    from calstream.daemon.operations.parked_causes import parked_lines as _parked
    from calstream.daemon.operations.status_summary import Endpoint, summarise_parked

    endpoints = [Endpoint("a", samples=[("calstream_parked_items",
                                         {"stage": "stage2", "cause": "disk_full"}, 2.0),
                                        ("calstream_parked_items",
                                         {"stage": "detector1", "cause": "crds_lookup"}, 0.0)]),
                 Endpoint("b", samples=[("calstream_parked_items",
                                         {"stage": "stage2", "cause": "disk_full"}, 1.0)])]
    parked = summarise_parked(endpoints)
    assert parked == [{"stage": "stage2", "cause": "disk_full", "root": "", "items": 3}]
    assert "stage2: 3 item(s), disk_full" in "\n".join(_parked(parked))


def test_dead_letters_without_an_exposure_neither_break_the_console_nor_get_lost():
    """A watcher's bad_file dead letter has no original record (``original``
    null): the console raised on it, so one bad file in the inbox made every
    console page fail. A stage-3 dead letter names no exposure: it belongs on
    the observation its order's key (the product name) names."""
    from calstream.daemon.operations.console_data import index_product_dead_letters

    bad_file = {"stage": "watcher", "category": "bad_file", "exposure_id": None,
                "path": "/inbox/notajwstname_uncal.fits", "original": None,
                "reason": "not a JWST exposure name", "emitted_at": "2026-11-24T05:03:00Z"}
    stage3 = {"stage": "stage3", "category": "permanent_failure", "exposure_id": None,
              "reason": "calwebb_image3 failed: boom", "emitted_at": "2026-11-24T05:04:00Z",
              "original": {"topic": "calstream.work.stage3", "partition": 0, "offset": 3,
                           "key": "jw01234-o001_t001_nircam_clear-f150w", "value": "{}"}}
    forged = {**stage3, "original": "not an object"}
    index: dict = {}
    index_product_dead_letters([bad_file, stage3, forged], index)
    assert list(index) == [("01234", "001")]
    obs = index[("01234", "001")]
    assert obs.dead_letters == [stage3]
    broker = BrokerView("h:1")
    broker.dead_letters = [bad_file, stage3]
    status = Status(time.time(), "p.", "p", [], {}, broker, None)
    snap = Snapshot(time.time(), "live", index, status, ["live"], "live", [],
                    broker.dead_letters, None)
    assert "calwebb_image3 failed: boom" in console_pages.observation_page(snap, obs, {}).decode()
    assert "not a JWST exposure name" in console_pages.index(snap).decode()


def test_a_promotion_record_promote_did_not_write_is_left_out(tmp_path):
    """A file in <products>/promotions/ is anyone's: a promoted_at that is no
    text raised out of the front page, every time (door fuzz). Only a
    promotion message's body, as `calstream promote` writes it, is shown."""
    import json

    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.operations.console_data import _promotions

    store = ProductStore(tmp_path / "products")
    (store.top / "promotions").mkdir(parents=True)
    (store.top / "promotions" / "x.json").write_text(json.dumps(
        {"namespace": "ctx2", "previous": "live", "promoted_at": ["2026"], "records": 3}))
    assert _promotions(store) == []
    assert console_pages.index(Snapshot(time.time(), "live", {}, None, ["live"], "live",
                                        _promotions(store), [], None))


def test_a_dead_letter_whose_reason_holds_a_lone_surrogate_still_shows_the_page():
    """A "\\ud800" escape in a dead letter's reason failed the front page's
    encoding as long as it was among the recent ones (door fuzz)."""
    letter = {"emitted_at": "2026-11-24T06:00:00Z", "stage": "detector1", "category": "bad_input",
              "reason": "x\ud800", "attempts": 0, "exposure_id": None, "path": None}
    page = console_pages.index(Snapshot(time.time(), "live", {}, None, ["live"], "live", [],
                                        [letter], None))
    assert b"x\\ud800" in page


def test_a_file_named_with_an_escape_sequence_shows_it_escaped_as_the_cli_does():
    """A dead letter for a file named "jw\\x1b[31m..." put the ESC on the page
    raw (invisible, and no character HTML allows); its reason, already
    escaped by the watcher, read "\\x1b". A traceback's line breaks stay."""
    letter = {"emitted_at": "2026-11-24T06:00:00Z", "stage": "watcher", "category": "bad_file",
              "reason": "a\nb\x07", "attempts": 0, "exposure_id": None,
              "path": "/inbox/jw\x1b[31mred_uncal.fits"}
    page = console_pages.index(Snapshot(time.time(), "live", {}, None, ["live"], "live", [],
                                        [letter], None)).decode()
    assert "jw\\x1b[31mred_uncal.fits" in page and "a\nb\\x07" in page
    assert not [c for c in page if ord(c) < 0x20 and c not in "\n\t"]


def test_bidirectional_controls_in_a_record_are_shown_escaped_on_page_and_terminal():
    """U+202E (right-to-left override) in a dead letter's reason or a hold's
    showed what followed it reversed ("Trojan Source"): a forged record could
    show an exposure id or a reason other than it is. Shown as escapes, as
    the other control characters are."""
    from calstream.daemon.operations.cli.holds import hold_row

    text = "fine: \u202e1sbrn_10000_10120_100100432", "10wj\u2066\u2028"
    letter = {"emitted_at": "2026-11-24T06:00:00Z", "stage": "watcher", "category": "bad_file",
              "reason": "".join(text), "attempts": 0, "exposure_id": None, "path": "/inbox/x"}
    page = console_pages.index(Snapshot(time.time(), "live", {}, None, ["live"], "live", [],
                                        [letter], None)).decode()
    row = hold_row({"exposure_id": _eid(1), "state": "held", "since": "2026-11-24T05:01:00Z",
                    "reason": "".join(text)})
    for shown in (page, row):
        assert "\\u202e1sbrn" in shown and "\\u2066\\u2028" in shown
        assert not {"\u202e", "\u2066", "\u2028"} & set(shown)


def test_the_front_page_says_whether_the_planner_keeps_up():
    def front(planner: dict) -> str:
        status = Status(time.time(), "p.", "p", [], {}, BrokerView("h:1"), planner)
        return console_pages.index(_snapshot({}, status)).decode()

    behind = front({"view": {"caught_up": False, "behind": {"calstream.products": 1200,
                                                            "calstream.plans": 0}}})
    assert "catching up with its history; 1200 record(s) of calstream.products left to " \
           "decide" in behind
    kept_up = front({"view": {"caught_up": True, "namespaces": {},
                              "behind": {"calstream.products": 0}}})
    assert "caught up; nothing left to decide" in kept_up
    # What a daemon serves is untrusted: a count that is none, markup in a name.
    odd = front({"view": {"caught_up": True, "behind": {"<b>x</b>": 3, "y": "many"}}})
    assert "3 record(s) of &lt;b&gt;x&lt;/b&gt; left to decide" in odd and "many" not in odd
    assert "no daemon given serves /planner" in front({})


def test_a_path_naming_no_observation_is_shown_escaped(tmp_path):
    """The 404 page wrote the request's path into the HTML as it came:
    /console/program/<img src=x onerror=...>/001 put markup in the page."""
    console = Console(load(None, env={}, flags={"work_dir": tmp_path}), lambda: [])
    code, body, _ = console.handle("/console/program/<img src=x onerror=alert(1)>/001")
    assert code == 404
    assert b"<img" not in body and b"&lt;img src=x onerror=alert(1)&gt;/001" in body


def test_a_current_that_is_not_the_link_promote_makes_breaks_nothing(tmp_path):
    """<products>/current made a directory (a copy of the store that followed
    links) raised EINVAL out of every console page and a traceback out of
    `calstream promote`; a link made elsewhere by hand was shown as live."""
    import os

    import pytest

    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.promotion import current_namespace, promote
    from calstream.daemon.operations.config import ConfigError

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    current = store.top / "current"
    current.mkdir(parents=True)
    assert current_namespace(store) is None
    code, body, _ = Console(cfg, lambda: []).handle("/console/")
    assert code == 200 and b"is not the link" in body
    with pytest.raises(ConfigError, match="current is a directory, not the link"):
        promote(store, "live", reason="back to live", by="ops")
    assert current.is_dir() and not current.is_symlink()  # left for a person to look at
    current.rmdir()
    os.symlink("/somewhere/else", current)
    assert current_namespace(store) is None
    current.unlink()
    assert current_namespace(store) == "live"  # none: the live tree, as before
    os.symlink("namespaces/ctx2", current)
    assert current_namespace(store) == "ctx2"


def test_a_namespace_the_store_has_not_is_not_kept(tmp_path):
    """Every ?ns= of a valid name built a snapshot (the broker and the store
    read) and kept it for good: a page asked for with ever new names grew
    the daemon's memory without bound, and a mistyped one showed an empty
    console instead of saying so."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    (cfg.products / "namespaces" / "ctx2").mkdir(parents=True)
    console = Console(cfg, lambda: [])
    for n in range(20):
        code, body, _ = console.handle(f"/console/?ns=typo{n}")
        assert code == 404 and f"no namespace 'typo{n}'".encode() in body
    assert console.handle("/console/program/01234/001?ns=typo")[0] == 404
    assert set(console.data._cache) == set()
    assert console.handle("/console/?ns=ctx2")[0] == 200
    assert console.handle("/console/")[0] == 200
    assert set(console.data._cache) == {"ctx2", "live"}


def test_a_broker_that_cannot_be_read_leaves_the_planner_s_view_and_its_own_error():
    """The broker unread (holds None): indexing raised TypeError, so the page
    said "broker: TypeError: 'NoneType' object is not iterable" instead of
    why, and the planner's missing exposures and waiting associations were
    left out."""
    view = {"namespaces": {"live": {"stage3": {"missing": {
        _eid(3): {"since": time.time() - 60, "candidates": ["jw01234-o001_image3"]}}}}}}
    status = Status(time.time(), "p.", "p", [], {},
                    BrokerView("h:1", error="no answer within 10s"), {"view": view})
    index: dict = {}
    index_broker(status, "live", index)
    assert _eid(3) in index[("01234", "001")].missing


def test_a_product_store_that_does_not_exist_is_named_not_shown_as_empty(tmp_path):
    """`calstream console --work-dir /var/lib/calstrem` (a typo, or a daemon
    never started there) served an empty console: "Programs and
    observations: none", no dead letters, no word that the product store it
    reads is not there. An operator read it as "nothing arrived"."""
    typo = tmp_path / "calstrem"
    code, body, _ = Console(load(None, env={}, flags={"work_dir": typo}),
                            lambda: []).handle("/console/")
    assert code == 200
    assert f"product store {typo / 'products'} does not exist".encode() in body
    assert not typo.exists()  # the console writes nothing, not even the missing store
    # A store that is there, empty (a deployment nothing ever arrived at), is not an error.
    empty = load(None, env={}, flags={"work_dir": tmp_path / "empty"})
    empty.products.mkdir(parents=True)
    assert b"does not exist" not in Console(empty, lambda: []).handle("/console/")[1]


def test_the_console_says_what_clears_a_parked_item_as_status_does():
    status = Status(time.time(), "p.", "p", [], {}, BrokerView("h:1", error="x"), {},
                    [{"stage": "detector1", "cause": "read_only", "items": 1}])
    body = console_pages.index(_snapshot({}, status)).decode()
    assert "remount the product store (or the work directory) writable" in body


def _product(stage: str, name: str, **extra) -> dict:
    """A product event the contract accepts, as a daemon's record holds it."""
    from calstream.topics import contract

    return contract.build(
        "product", contract.event_id("product", stage, name), work_id="a" * 64, stage=stage,
        pipeline="calwebb_x", outcome="success", program="01234", observation="001",
        product_name=name, exposure_id=None if stage == "stage3" else name, inputs=[],
        outputs=[], jwst_version="1.0", crds_context="jwst_1.pmap", pointing_quality="ACTUAL",
        pointing_provisional=False, arrived_at="2026-11-24T05:00:00.000Z",
        duration_seconds=2.0, **extra).body


def test_a_provenance_record_of_no_product_event_is_left_out_not_every_page_broken(tmp_path):
    """The store takes a record whose event is an object listing its files
    (provenance_records.py); the console read the rest as a product event:
    a program that was no text (a list; a number beside the others' texts),
    a stage-3 event without its product name, a preview without its path
    raised out of every page (the browser got no answer at all), and an
    association whose members are not objects out of the observation's."""
    import json

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    provenance = cfg.products / "01234" / "001" / ".provenance"
    provenance.mkdir(parents=True)
    stage3 = "jw01234-o001_t001_nircam_clear-f200w"
    good = [_product("stage2", _eid(1)),
            # The association is no field of the contract's: any shape is shown.
            _product("stage3", stage3, association={"members": [
                "x", {"expname": 5}, {"expname": f"{_eid(1)}_cal.fits"}]})]
    forged = [{**good[0], "program": ["01234"]}, {**good[0], "program": 1234},
              {k: v for k, v in good[1].items() if k != "product_name"},
              {**good[0], "previews": [{"role": "thumbnail", "of": "x"}]}]
    for n, event in enumerate(good + forged):
        (provenance / f"{n}.{event['stage']}.json").write_text(
            json.dumps({"work_id": "a" * 64, "event": event}))
    console = Console(cfg, lambda: [])
    code, body, _ = console.handle("/console/")
    assert code == 200 and b"/console/program/01234/001" in body
    assert b"4 provenance record(s) in the product store hold no product event" in body
    code, body, _ = console.handle("/console/program/01234/001")
    assert code == 200 and _eid(1).encode() in body and stage3.encode() in body


def test_a_planner_view_of_shapes_not_known_here_leaves_the_pages_standing():
    """What a daemon serves at /planner is read as `calstream status` reads
    it, untrusted (a daemon of another version): a missing exposure's time
    that was no number raised out of its observation's page, a candidate's
    name that was no text out of the indexing (the whole view lost, under an
    error blamed on the broker)."""
    view = {"namespaces": {"live": {
        "stage2_waiting": {_eid(4): "a text, not reasons"},
        "stage3": {"missing": {_eid(3): {"since": "yesterday", "candidates": [1]},
                               _eid(5): ["no", "object"]},
                   "candidates": [{"candidate": 5}, "no object",
                                  {"candidate": "jw01234-o001_image3", "quiet_for": "long",
                                   "missing": [7, _eid(3)], "waiting_for": ["members"]}],
                   "abandoned": [{"candidate": ["x"]}, 3]}}}}
    status = Status(time.time(), "p.", "p", [], {}, BrokerView("h:1"), {"view": view})
    index: dict = {}
    index_broker(status, "live", index)
    obs = index[("01234", "001")]
    assert set(obs.missing) == {_eid(3)} and len(obs.waiting) == 2
    html = console_pages.observation_page(_snapshot(index, status), obs, {}).decode()
    assert "Missing exposures (1)" in html and "a text, not reasons" in html
    assert "stage 3 jw01234-o001_image3" in html


def test_pages_over_thousands_of_observations_holds_and_missing_stay_bounded():
    """An observation's page had a row for each exposure held and each one
    missing (thousands after an outage of the pointing data, or of a plan's
    whole program), the front page one for each observation of the store
    (tens of thousands in a store of years): pages grew without bound. Now
    100 rows of each, paged or with where the rest are."""
    from calstream.daemon.operations.console_data import Observation

    index: dict = {}
    busy = index[("01234", "001")] = Observation("01234", "001")
    for n in range(1, 1001):
        busy.exposure(_eid(n)).hold = {"exposure_id": _eid(n), "state": "held",
                                       "since": "2026-11-24T05:01:00Z", "reason": "PLANNED"}
        busy.missing[_eid(n + 5000)] = {"since": time.time() - 60, "candidates": ["jw01234-o001"]}
    for program in range(2000, 3000):
        index[(f"{program:05d}", "001")] = Observation(f"{program:05d}", "001")
    html = console_pages.observation_page(_snapshot(index), busy, {}).decode()
    assert html.count('<tr class="missing">') == console_pages.PAGE_SIZE
    assert html.count('<tr class="held">') == console_pages.PAGE_SIZE  # the holds' table
    assert "the first 100 of 1000 shown; calstream holds list lists them all" in html
    front = console_pages.index(_snapshot(dict(sorted(index.items()))), {"page": ["3"]}).decode()
    assert "Programs and observations (1001; page 3 of 11)" in front
    assert front.count('<a href="/console/program/') == console_pages.PAGE_SIZE
    assert "/console/program/02199/001" in front and "/console/program/02298/001" in front
    assert "/console/program/02198/001" not in front and "/console/program/02299/001" not in front


def test_a_preview_asked_for_through_a_loop_of_links_is_a_bad_path(tmp_path):
    """pathlib raises RuntimeError on a loop of links (Python 3.11, 3.12):
    /console/preview?path=/tmp/loop/x.png raised out of the request, which
    got no answer at all."""
    import os

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    console = Console(cfg, lambda: [])
    assert console.handle(f"/console/preview?path={tmp_path}/a/previews/x.png")[0] == 400


def test_a_record_s_megabyte_of_text_is_shown_bounded():
    """A hold's reason or a dead letter's is up to the megabyte a message may
    be (anyone may write either topic): each was shown whole, in the
    timeline and again in its table, for each of up to 100 rows a page."""
    from calstream.daemon.operations.cli.holds import hold_row

    huge = "<b>" + "x" * 900_000 + "</script>"
    index: dict = {}
    index_records([_event(1, "detector1")], index)
    broker = BrokerView("h:1")
    hold = {"exposure_id": _eid(1), "state": "held", "since": "2026-11-24T05:01:00Z",
            "reason": huge}
    broker.holds = [hold]
    broker.dead_letters = [{"exposure_id": _eid(1), "stage": "detector1", "category":
                            "permanent_failure", "reason": huge,
                            "emitted_at": "2026-11-24T05:03:00Z", "attempts": 1}]
    status = Status(time.time(), "p.", "p", [], {}, broker, {})
    index_broker(status, "live", index)
    snap = _snapshot(index, status)
    snap.dead_letters = broker.dead_letters  # the front page's recent ones
    for html in (console_pages.observation_page(snap, index[("01234", "001")], {}),
                 console_pages.index(snap)):
        assert len(html) < 100_000, len(html)
        assert b"more characters]" in html and b"</script>" not in html
    assert len(hold_row(hold)) < 3_000
