"""Values that mean nothing are usage errors (exit 2) when the command line is
read, before any broker is: a negative count showed every record but the
first few, a negative time-out gave up at once, a reason of "" or "ok" was
the schema's traceback (holds release) or an empty why on record."""

import pytest

from calstream.daemon.operations.cli.main import build_parser

REASON = ["--reason", "WCS checked by hand"]


@pytest.mark.parametrize("argv, complaint", [
    (["status", "--dead-letters", "-3"], "'-3' is not a whole number of at least 0"),
    (["status", "--products", "-1"], "'-1' is not a whole number of at least 0"),
    (["status", "--products", "ten"], "'ten' is not a whole number"),
    (["status", "--timeout", "-1"], "'-1' is not a number of seconds above 0"),
    (["status", "--timeout", "nan"], "'nan' is not a number of seconds above 0"),
    (["subscribe", "--max", "-1"], "'-1' is not a whole number of at least 1"),
    (["subscribe", "--max", "0"], "'0' is not a whole number of at least 1"),
    (["holds", "release", "jw01234001001_02101_00003_nrcb1", "--reason", ""], "says nothing"),
    (["holds", "release", "jw01234001001_02101_00003_nrcb1", "--reason", "ok"], "says nothing"),
    (["deadletters", "redrive", "--all", "--reason", "  \t "], "says nothing"),
    (["promote", "r1", "--reason", ""], "says nothing"),
    (["deadletters", "redrive", "", *REASON], "an empty REF names no dead letter"),
    (["deadletters", "show", " "], "an empty REF names no dead letter"),
    # A pause that never ends or cannot be slept, a count of nothing: each was
    # taken, then hung (nan compares false: --until-idle never stopped) or
    # ended in a traceback after the program was written (time.sleep(-1)).
    (["subscribe", "--until-idle", "nan"], "'nan' is not a number of seconds above 0"),
    (["subscribe", "--until-idle", "-1"], "'-1' is not a number of seconds above 0"),
    (["demo", "--timeout", "nan"], "'nan' is not a number of seconds above 0"),
    (["demo", "--seed", "-5"], "'-5' is not a whole number of at least 0"),
    (["simulate", "d", "--interval", "-1"], "'-1' is not a number of seconds of 0 or more"),
    (["simulate", "d", "--piece-delay", "inf"], "'inf' is not a number of seconds of 0 or more"),
    (["simulate", "d", "--pieces", "0"], "'0' is not a whole number of at least 1"),
    (["simulate", "d", "--dithers", "0"], "'0' is not a whole number of at least 1"),
    (["simulate", "d", "--dithers", "-2"], "'-2' is not a whole number of at least 1"),
    (["simulate", "d", "--planned", "-1"], "'-1' is not a whole number of at least 1"),
    (["simulate", "d", "--seed", "-5"], "'-5' is not a whole number of at least 0"),
    (["simulate", "d", "--program", "1"], "'1' is not a program id of 5 digits"),
    # urllib's ValueError traceback once the broker was read; a file: URL read files.
    (["status", "--metrics-url", "http://[::1"], "is not a daemon's metrics endpoint"),
    (["status", "--metrics-url", "host:99999"], "is not a daemon's metrics endpoint"),
    (["status", "--metrics-url", "file:///etc"], "is not a daemon's metrics endpoint"),
    (["status", "--metrics-url", "host"], "is not a daemon's metrics endpoint"),
])
def test_a_value_that_means_nothing_is_a_usage_error(argv, complaint, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert complaint in capsys.readouterr().err


def test_sensible_values_are_taken():
    parser = build_parser()
    st = parser.parse_args(["status", "--dead-letters", "0", "--products", "5", "--timeout", "2"])
    assert (st.dead_letters, st.products, st.timeout) == (0, 5, 2.0)
    assert parser.parse_args(["subscribe", "--max", "1"]).max == 1
    release = parser.parse_args(["holds", "release", "jw01234001001_02101_00003_nrcb1", *REASON])
    assert release.reason == "WCS checked by hand"
    assert parser.parse_args(["promote", "r1"]).reason is None
    sim = parser.parse_args(["simulate", "d", "--interval", "0", "--pieces", "4",
                             "--piece-delay", "0.5", "--seed", "0", "--program", "01234"])
    assert (sim.interval, sim.pieces, sim.piece_delay, sim.seed, sim.program) == \
        (0.0, 4, 0.5, 0, "01234")
    assert parser.parse_args(["subscribe", "--until-idle", "5"]).until_idle == 5.0
    urls = ["127.0.0.1:9310", "http://[::1]:9310/metrics", "https://planner.example:443"]
    given = [a for u in urls for a in ("--metrics-url", u)]
    assert parser.parse_args(["status", *given]).metrics_url == urls


def test_refs_naming_no_dead_letter_or_several_are_named():
    from calstream.daemon.operations.cli.dead_letter_reading import ref_problem

    assert ref_problem("0:2", 0).startswith("no dead letter is 0:2 ")
    assert ref_problem("c", 2).startswith("c names 2 or more dead letters")
    assert "\x1b" not in ref_problem("\x1b[2J", 0)


@pytest.mark.parametrize("option, complaint", [
    (["--subarray", "BOGUS"], "unsupported subarray 'BOGUS'"),
    (["--detectors", "NRCZZ"], "unsupported detector 'NRCZZ'"),
    (["--planned", "99"], "planned exposures [99] are not in the visit"),
])
def test_a_program_the_simulator_cannot_make_is_refused_before_anything_is_written(
        option, complaint, tmp_path, capsys):
    """A subarray, detector or planned exposure the visit cannot have was the
    simulator's traceback (exit 1), part of the program written by then."""
    from calstream.daemon.operations.cli.main import main

    assert main(["simulate", str(tmp_path / "sim"), "--no-references", *option]) == 2
    err = capsys.readouterr().err
    assert "calstream: configuration error: simulate: " + complaint in err, err
    assert "Traceback" not in err and not (tmp_path / "sim").exists()


def test_a_file_where_the_simulation_goes_is_refused(tmp_path, capsys):
    from calstream.daemon.operations.cli.main import main

    (tmp_path / "taken").write_text("mine\n")
    assert main(["simulate", str(tmp_path / "taken"), "--no-references"]) == 2
    assert "DIR " + str(tmp_path / "taken") + " is a file" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine\n"
