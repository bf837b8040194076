"""`calstream demo` clears only its own directory, and says so in one line
when it is given something else (no daemon: the directory check alone)."""

import logging

import pytest

from calstream.daemon.operations.cli.main import main


@pytest.fixture(autouse=True)
def _logs_restored():
    """The command sets up the daemon's logs on this test's stderr: put the
    root logger back after it (as tests/unit/test_cli_failures.py does)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_a_file_or_a_directory_not_the_demos_is_refused_and_left_alone(tmp_path, capsys):
    """`demo --work-dir FILE` ended in iterdir's NotADirectoryError traceback."""
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "data").write_text("keep me too")
    for given, said in (("a-file", "is a file, not a directory"),
                        ("theirs", "exists and is not a demo directory")):
        with pytest.raises(SystemExit) as stop:
            main(["demo", "--work-dir", str(tmp_path / given)])
        assert said in str(stop.value.code) and "choose another --work-dir" in str(stop.value.code)
    assert (tmp_path / "a-file").read_text() == "keep me"
    assert (tmp_path / "theirs" / "data").read_text() == "keep me too"
