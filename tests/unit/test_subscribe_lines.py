"""`calstream subscribe`'s text lines: what a forged event says cannot forge
a line or reach the terminal as a control sequence."""

from calstream.daemon.operations.subscribe import text_line


def test_a_forged_suffix_is_escaped():
    event = {"emitted_at": "2026-01-01T00:00:00.000Z", "stage": "detector1",
             "outcome": "success", "program": "01234", "observation": "001",
             "product_name": "jw01234001001_02101_00001_nrcb1",
             "outputs": [{"suffix": "rate\n2026-01-01 forged line\x1b[2J\r"}, {"suffix": "x"}]}
    line = text_line(event)
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert line.endswith("[rate\\n2026-01-01 forged line\\x1b[2J\\x0d,x]")


def _product(**fields):
    from calstream.topics import contract

    wid = "a" * 64
    body = dict(work_id=wid, stage="detector1", pipeline="calwebb_detector1",
                outcome="success", program="01234", observation="001",
                exposure_id="jw01234001001_02101_00001_nrcb1",
                product_name="jw01234001001_02101_00001_nrcb1", inputs=[],
                outputs=[{"path": "/products/01234/001/jw01234001001_02101_00001_nrcb1_rate.fits",
                          "digest": "sha256:" + "0" * 64, "size": 10, "suffix": "rate"}],
                jwst_version="3.0.0", crds_context="jwst_0001.pmap",
                pointing_quality="CALCULATED", pointing_provisional=False)
    body.update(fields)
    return contract.build("product", contract.event_id("product", wid, "success"), **body)


def _subscriber(tmp_path, write_dir=None):
    import argparse

    from calstream.daemon.operations.config import load
    from calstream.daemon.operations.subscribe import Subscriber

    args = argparse.Namespace(program=None, observation=None, stage=None, pipeline=None,
                              exposure=None, namespace=None, suffix=None, since=None,
                              write_dir=write_dir, format="json", max=None, group=None)
    return Subscriber(load(None, env={}, flags={"work_dir": tmp_path}), args)


def _record(message, offset):
    from types import SimpleNamespace

    from calstream.topics import contract

    return SimpleNamespace(value=contract.encode(message), topic="calstream.products",
                           partition=0, offset=offset)


def test_an_event_id_again_with_other_content_is_reported_not_dropped_as_a_duplicate(
        tmp_path, capsys):
    """Deduplication on event_id trusts that an id means one content (the
    contract says so). A forged event reusing a real one's id, with other
    outputs, was counted a duplicate without a word, in this run and, with
    --write-dir, in the next. It is reported on stderr and counted apart."""
    from calstream.topics import contract

    real = _product()
    again = contract.Message("product", {**real.body, "emitted_at": "2030-01-01T00:00:00Z"})
    forged = contract.Message("product", {**real.body, "outputs": [
        {**real["outputs"][0], "path": "/etc/shadow"}]})
    for write_dir in (None, tmp_path / "events"):
        if write_dir:
            write_dir.mkdir()
        sub = _subscriber(tmp_path, write_dir)
        for offset, message in enumerate((real, again, forged)):
            sub.handle(_record(message, offset))
        out, err = capsys.readouterr()
        assert sub.counts == {"delivered": 1, "duplicate": 1, "filtered": 0, "invalid": 0,
                              "conflicting": 1, "commits_refused": 0, "broker_lost": 0}, \
            (write_dir, sub.counts)
        assert "/etc/shadow" not in out
        assert f"calstream.products[0]@2: event_id {real.event_id[:12]}" in err, err
    # The next run knows the id from its file: the same content is a duplicate,
    # other content a conflict.
    sub = _subscriber(tmp_path, tmp_path / "events")
    sub.handle(_record(again, 5))
    sub.handle(_record(forged, 6))
    assert (sub.counts["duplicate"], sub.counts["conflicting"]) == (1, 1), sub.counts
    assert "/etc/shadow" not in (tmp_path / "events" / f"{real.event_id}.json").read_text()


def test_a_long_run_remembers_a_bounded_number_of_event_ids(tmp_path, monkeypatch, capsys):
    """The example subscriber, meant to be copied and run for months with
    --group, kept every event id it had handled: memory without end, and a
    flood of forged ids (anyone may write the topic) grew it at will. It
    remembers the most recent ones; an older id is delivered again, which
    at-least-once delivery allows."""
    from calstream.daemon.operations import subscribe
    from calstream.topics import contract

    def event(n: int) -> contract.Message:
        name = f"jw01234001001_02101_{n:05d}_nrcb1"
        body = _product(exposure_id=name, product_name=name).body
        return contract.Message("product", {**body, "event_id": f"{n:064x}"})

    monkeypatch.setattr(subscribe, "REMEMBERED", 3, raising=False)
    sub = _subscriber(tmp_path)
    for n in range(1, 7):
        sub.handle(_record(event(n), n))
    assert sub.counts["delivered"] == 6 and len(sub.seen) == 3
    sub.handle(_record(event(6), 9))  # recent: still a duplicate
    assert sub.counts["duplicate"] == 1
    capsys.readouterr()


def test_a_version_it_does_not_know_is_read_or_skipped_as_the_contract_says(tmp_path, capsys):
    """docs/contract.md, "Versions you do not know": a higher minor is
    read (its new fields ignored), an unknown major reported and skipped,
    and reading goes on."""
    from calstream.topics import contract

    newer = _product()
    newer = contract.Message("product", {**newer.body, "schema_version": "1.99",
                                         "a_field_of_1_99": {"x": 1}})
    major = _product(work_id="b" * 64)
    major = contract.Message("product", {**major.body, "schema_version": "2.0",
                                         "event_id": "c" * 64})
    after = contract.Message("product", {**_product().body, "event_id": "d" * 64})
    import json
    from types import SimpleNamespace

    sub = _subscriber(tmp_path)
    for offset, message in enumerate((major, newer, after)):
        # As any producer may write it: no schema of this reader's checks it on the way.
        sub.handle(SimpleNamespace(value=json.dumps(message.body).encode(), offset=offset,
                                   topic="calstream.products", partition=0))
    out, err = capsys.readouterr()
    assert (sub.counts["delivered"], sub.counts["invalid"]) == (2, 1), sub.counts
    assert "calstream.products[0]@0: schema_version '2.0' is not readable by this reader " \
           "(major 1)" in err, err
    assert '"a_field_of_1_99":{"x":1}' in out
