"""Plans: jwst association pools and manifests become expected exposures."""

import json

import pytest

from calstream.steps.plans import Plan, PlanError, load_plan, parse_manifest, parse_pool

COLUMNS = "FILENAME|PROGRAM|OBS_NUM|VISIT|EXPOSURE|EXP_TYPE|NEXPOSUR|INSTRUME|DETECTOR|" \
          "TARGETID|FILTER|PUPIL|SUBARRAY|ASN_CANDIDATE|EXSEGTOT|IS_PSF|BKGDTARG|TSOVISIT"


def row(name, exp_type="NRC_IMAGE", candidates="[('o001', 'observation')]", segtot="NULL",
        detector="NRCB1", tso="F"):
    return (f"{name}|1234|1|1|1|{exp_type}|4|NIRCAM|{detector}|1|F150W|CLEAR|SUB160P|"
            f"{candidates}|{segtot}|F|F|{tso}")


def test_a_pool_lists_each_file_with_its_candidates_and_keywords(tmp_path):
    text = "\n".join([
        COLUMNS,
        row("jw01234001001_02101_00001_nrcb1_uncal.fits",
            candidates="[('o001', 'observation'), ('c1000', 'mosaic')]"),
        row("jw01234001001_02101_00002_nrcb1_uncal.fits"),
        # A whole segmented exposure stands for its EXSEGTOT files.
        row("jw01234002001_01101_00001_nrca1_uncal.fits", exp_type="NRC_TSIMAGE",
            candidates="[('o002', 'observation')]", segtot="3", detector="NRCA1", tso="T"),
    ])
    (tmp_path / "jw01234_pool.csv").write_text(text + "\n")
    plan = load_plan(tmp_path / "jw01234_pool.csv")
    ids = [e.exposure_id for e in plan.exposures]
    assert ids == ["jw01234001001_02101_00001_nrcb1", "jw01234001001_02101_00002_nrcb1",
                   *[f"jw01234002001_01101_00001-seg00{s}_nrca1" for s in (1, 2, 3)]]
    first = plan.exposures[0]
    assert first.candidates == ("o001", "c1000")
    assert first.header["FILTER"] == "F150W" and first.header["OBSERVTN"] == "001"
    assert "IS_PSF" in first.header and "EXSEGTOT" not in first.header  # NULL is no value
    assert plan.exposures[3].header["EXSEGNUM"] == "2"
    assert plan.programs == ("01234",)
    # Same content, same plan: loading it twice is one plan.
    assert parse_pool(text).plan_id == plan.plan_id


@pytest.mark.parametrize("text, reason", [
    ("", "empty pool"),
    ("A|B\n1|2\n", "no FILENAME column"),
    (COLUMNS + "\n" + row("not-a-jwst-name.fits"), "not a JWST exposure name"),
    (COLUMNS + "\n" + row("jw01234001001_02101_00001_nrcb1_uncal.fits")[:-2], "values for"),
    (COLUMNS + "\n" + row("jw01234001001_02101_00001_nrcb1_uncal.fits",
                          candidates="[('x9', 'observation')]"), "is not oNNN"),
    # A list of 10**12 segments would be built (and never finish) otherwise.
    (COLUMNS + "\n" + row("jw01234001001_02101_00001_nrcb1_uncal.fits", segtot="1000000000000"),
     r"p.csv row 2: EXSEGTOT = 1000000000000 is outside 1\.\.10000"),
])
def test_a_bad_pool_is_an_error_naming_the_row(text, reason):
    with pytest.raises(PlanError, match=reason):
        parse_pool(text, source="p.csv")


def test_a_manifest_needs_names_and_defaults_to_the_observation_candidate():
    plan = parse_manifest(json.dumps({"exposures": [
        {"filename": "jw01234001001_02101_00001_nrcb1_uncal.fits"}]}))
    assert plan.exposures[0].candidates == ("o001",)
    with pytest.raises(PlanError, match="at least one"):
        parse_manifest(json.dumps({"exposures": []}))
    with pytest.raises(PlanError, match="not JSON"):
        parse_manifest("{nope")


def test_pool_comment_lines_are_skipped_as_jwst_reads_them():
    from calstream.steps.plans import parse_pool

    text = "# Pool.Image.MIRI\n#\n" + COLUMNS + "\n" + row("jw01234001001_02101_00001_nrcb1_uncal.fits")
    plan = parse_pool(text)
    assert [e.exposure_id for e in plan.exposures] == ["jw01234001001_02101_00001_nrcb1"]


@pytest.mark.parametrize("header, reason", [
    ({"EXSEGTOT": 10**12}, r"EXSEGTOT = 1000000000000 is outside 1\.\.10000"),
    ({"NEXPOSUR": 10**18}, "NEXPOSUR = 1000000000000000000 is outside"),
    ({"FILTER": {"a": 1}}, "header value.s. of FILTER are not FITS values"),
    ({"TARGETID": [1]}, "header value.s. of TARGETID are not FITS values"),
])
def test_a_plan_header_no_file_could_have_is_refused(header, reason):
    """Routing and level-3 names read a plan's keywords as an arrival's: a
    manifest, and a plan read back from its topic, are held to the bounds
    and value types a file's header is (steps/exposure.py)."""
    entry = {"exposure_id": "jw01234001001_02101_00001_nrcb1", "header": header}
    with pytest.raises(PlanError, match=reason):
        parse_manifest(json.dumps({"exposures": [entry]}), source="m.json")
    message = {"plan_id": "0" * 64, "exposures": [{**entry, "candidates": ["o001"]}]}  # its header judged first
    with pytest.raises(PlanError, match=reason):
        Plan.from_json(message)


def test_a_plan_may_give_a_segments_integrations_without_their_total():
    """A plan's keywords are partial: INTSTART..INTEND is judged against
    NINTS only when the plan gives NINTS too."""
    entry = {"exposure_id": "jw01234001001_02101_00001-seg002_nrcb1",
             "header": {"INTSTART": 51, "INTEND": 100}}
    plan = parse_manifest(json.dumps({"exposures": [entry]}))
    assert plan.exposures[0].header["INTEND"] == 100
    with pytest.raises(PlanError, match="INTEND = 100 is beyond NINTS = 60"):
        parse_manifest(json.dumps({"exposures": [
            {**entry, "header": {**entry["header"], "NINTS": 60}}]}))


def test_json_that_is_no_manifest_is_told_as_such(tmp_path):
    """A JSON array was read as a pool: "no FILENAME column in [..." said
    nothing useful about a JSON file."""
    path = tmp_path / "m.json"
    path.write_text('[{"exposure_id": "jw01234001001_02101_00001_nrcb1"}]')
    with pytest.raises(PlanError, match=r'm.json: a manifest is \{"exposures": \[...\]\}'):
        load_plan(path)


@pytest.mark.parametrize("text", [
    '{"exposures": [{"exposure_id": "jw01234001001_02101_00001_nrcb1", "header": ["x"]}]}',
    '{"exposures": [{"exposure_id": "jw01234001001_02101_00001_nrcb1", "header": "x"}]}',
    '{"exposures": ' + "[" * 5000 + "]" * 5000 + "}",
])
def test_a_manifest_of_the_wrong_shape_is_a_plan_error(text):
    """Not a traceback out of `calstream plan load` (door fuzz)."""
    with pytest.raises(PlanError):
        parse_manifest(text)


def test_a_pool_csv_cannot_read_is_a_plan_error():
    with pytest.raises(PlanError, match="not a pool"):
        parse_pool("FILENAME|EXP_TYPE\n" + '"' + "x" * 200_000 + "|NRC_IMAGE\n")
    with pytest.raises(PlanError, match="candidates are not a list"):
        parse_manifest('{"exposures": [{"exposure_id": "jw01234001001_02101_00001_nrcb1", '
                       '"candidates": 1.5}]}')


def test_a_plan_under_another_plan_s_id_is_refused():
    """A plan's id is its content's digest: readers keep one plan an id (the
    first read wins; the ledger keeps one file an id), so a forged plan
    under a real plan's id replaced it at the next start."""
    real = parse_manifest(json.dumps({"exposures": [
        {"exposure_id": "jw01234001001_02101_00001_nrcb1", "candidates": ["o001"]},
        {"exposure_id": "jw01234001001_02101_00002_nrcb1", "candidates": ["o001"]}]}),
        source="m.json")
    assert Plan.from_json(real.to_json()) == real
    forged = {**real.to_json(), "exposures": real.to_json()["exposures"][:1]}
    with pytest.raises(PlanError, match="plan_id is not the digest"):
        Plan.from_json(forged)
