"""Visit completeness from headers: expected detectors, counts, missing exposures."""

from calstream.steps.associations import Exposure
from calstream.steps.completeness import expected_detectors, exposure_start, visit_status
from calstream.steps.synthetic.headers import exposure_id, synthetic_header


def exposure(instrument, exp_type, variant="default", **kw):
    header = synthetic_header(instrument, exp_type, variant, **kw)
    return Exposure(exposure_id(header), header, {})


def test_expected_detectors():
    h = synthetic_header("NIRCAM", "NRC_IMAGE")  # module B, FULL
    assert expected_detectors(h) == {"nrcb1", "nrcb2", "nrcb3", "nrcb4", "nrcblong"}
    both = synthetic_header("NIRCAM", "NRC_IMAGE", APERNAME="NRCALL_FULL")
    assert len(expected_detectors(both)) == 10
    assert expected_detectors(synthetic_header("NIRCAM", "NRC_IMAGE", SUBARRAY="SUB64P")) == {"nrcb1"}
    assert expected_detectors(synthetic_header("NIRCAM", "NRC_CORON")) == {"nrcalong"}
    assert expected_detectors(synthetic_header("MIRI", "MIR_IMAGE")) == {"mirimage"}
    assert expected_detectors(synthetic_header("MIRI", "MIR_MRS")) == {"mirifushort", "mirifulong"}
    assert expected_detectors(synthetic_header("NIRSPEC", "NRS_IFU")) == {"nrs1", "nrs2"}
    assert expected_detectors(synthetic_header("NIRSPEC", "NRS_FIXEDSLIT")) == {"nrs1"}
    assert expected_detectors(synthetic_header("NIRSPEC", "NRS_BRIGHTOBJ")) == {"nrs1", "nrs2"}
    assert expected_detectors(synthetic_header("NIRISS", "NIS_IMAGE")) == {"nis"}
    assert expected_detectors(synthetic_header("FGS", "FGS_IMAGE", DETECTOR="GUIDER2")) == {"guider2"}


def test_dithers_complete_and_missing_numbers():
    seen = [exposure("MIRI", "MIR_IMAGE", EXPOSURE=f"{i:05d}", NEXPOSUR=4) for i in (1, 2, 4)]
    status = visit_status(seen)
    (d,) = status.of_visit("jw01234001001")
    assert (d.detector, d.expected, d.seen, d.complete) == ("mirimage", 4, 3, False)
    assert d.missing == ("02101_00003",) and d.missing_count == 1
    assert d.since == exposure_start(seen[0].header)
    last = exposure("MIRI", "MIR_IMAGE", EXPOSURE="00003", NEXPOSUR=4)
    status = visit_status([*seen, last, last])  # a duplicate counts once
    assert status.complete and status.visit_complete("jw01234001001")
    assert status.missing_count == 0


def test_trailing_exposure_missing_and_arrivals():
    seen = [exposure("MIRI", "MIR_IMAGE", EXPOSURE=f"{i:05d}", NEXPOSUR=3) for i in (1, 2)]
    arrivals = {seen[0].exposure_id: 200.0, seen[1].exposure_id: 100.0}
    (d,) = visit_status(seen, arrivals=arrivals).incomplete
    assert d.missing == ("02101_00003",) and d.since == 100.0


def test_segments_count_and_a_missing_segment_is_named():
    segs = [exposure("NIRSPEC", "NRS_BRIGHTOBJ", EXSEGNUM=s, EXSEGTOT=3, NEXPOSUR=1)
            for s in (1, 3)]
    status = visit_status(segs)
    nrs1 = status.detectors[("jw01234001001", "nrs1")]
    assert (nrs1.expected, nrs1.seen, nrs1.complete) == (3, 2, False)
    assert nrs1.missing == ("02101_00001-seg002",)
    # G395H BOTS also reads NRS2: nothing there yet, all three segments missing.
    nrs2 = status.detectors[("jw01234001001", "nrs2")]
    assert (nrs2.seen, nrs2.missing_count, nrs2.missing) == (0, 1, ("02101_00001",))
    more = [exposure("NIRSPEC", "NRS_BRIGHTOBJ", EXSEGNUM=s, EXSEGTOT=3, NEXPOSUR=1, DETECTOR=d)
            for s in (1, 2, 3) for d in ("NRS1", "NRS2")]
    assert visit_status(more).complete


def test_multiple_detectors_and_visits():
    sw = [exposure("NIRCAM", "NRC_IMAGE", DETECTOR=det, EXPOSURE=f"{i:05d}", NEXPOSUR=2)
          for det in ("NRCB1", "NRCB2", "NRCB3", "NRCB4") for i in (1, 2)]
    lw = [exposure("NIRCAM", "NRC_IMAGE", DETECTOR="NRCBLONG", EXPOSURE="00001", NEXPOSUR=2)]
    other_visit = [exposure("NIRCAM", "NRC_IMAGE", VISIT="002", DETECTOR="NRCB1", NEXPOSUR=1)]
    status = visit_status([*sw, *lw, *other_visit])
    assert status.visits == ("jw01234001001", "jw01234001002")
    assert not status.visit_complete("jw01234001001")
    (long,) = [d for d in status.incomplete if d.visit == "jw01234001001"]
    assert (long.detector, long.missing) == ("nrcblong", ("02101_00002",))
    # visit 2 announced five detectors, only nrcb1 arrived
    assert {d.detector for d in status.of_visit("jw01234001002") if not d.complete} == {
        "nrcb2", "nrcb3", "nrcb4", "nrcblong"
    }


def test_several_activities_only_name_gaps():
    seen = [exposure("NIRISS", "NIS_IMAGE", ACT_ID=a, EXPOSURE=f"{i:05d}", NEXPOSUR=5)
            for a, i in (("01", 1), ("01", 3), ("02", 1))]
    (d,) = visit_status(seen).incomplete
    assert d.missing == ("02101_00002",)
    assert d.missing_count == 2  # 5 expected, 3 seen: one named, one only counted
