"""environ: variables set for a block, then restored as they were."""

import os

import pytest

from calstream.steps.environment import environ


def test_values_are_set_unset_and_restored(monkeypatch):
    monkeypatch.setenv("CALSTREAM_TEST_KEPT", "before")
    monkeypatch.delenv("CALSTREAM_TEST_NEW", raising=False)
    with environ({"CALSTREAM_TEST_KEPT": None, "CALSTREAM_TEST_NEW": ""}):
        assert "CALSTREAM_TEST_KEPT" not in os.environ
        assert os.environ["CALSTREAM_TEST_NEW"] == ""
    assert os.environ["CALSTREAM_TEST_KEPT"] == "before"
    assert "CALSTREAM_TEST_NEW" not in os.environ


def test_restored_when_the_block_raises(monkeypatch):
    monkeypatch.setenv("CALSTREAM_TEST_KEPT", "before")
    with pytest.raises(RuntimeError), environ({"CALSTREAM_TEST_KEPT": "during"}):
        assert os.environ["CALSTREAM_TEST_KEPT"] == "during"
        raise RuntimeError("boom")
    assert os.environ["CALSTREAM_TEST_KEPT"] == "before"
