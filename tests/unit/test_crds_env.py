"""CRDS environment: user settings win, synthetic defaults only fill gaps."""

from __future__ import annotations

import pytest

from calstream.steps.crds_env import SERVERLESS_URL, merge_crds_env, offline_crds_env


def test_offline_env_is_local_and_serverless(tmp_path):
    env = offline_crds_env(tmp_path, "jwst_0002.pmap")
    assert env == {
        "CRDS_PATH": str(tmp_path.resolve()),
        "CRDS_CONTEXT": "jwst_0002.pmap",
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": SERVERLESS_URL,
    }
    assert "serverless" in env["CRDS_SERVER_URL"]


def test_defaults_fill_an_empty_environment(tmp_path):
    defaults = offline_crds_env(tmp_path, "jwst_0001.pmap")
    assert merge_crds_env(defaults, {"HOME": "/root"}) == defaults


def test_a_users_cache_is_left_alone(tmp_path):
    defaults = offline_crds_env(tmp_path, "jwst_0001.pmap")
    user = {"CRDS_PATH": "/data/crds", "CRDS_SERVER_URL": "https://jwst-crds.stsci.edu"}
    assert merge_crds_env(defaults, user) == user


def test_a_users_context_wins_over_the_default(tmp_path):
    defaults = offline_crds_env(tmp_path, "jwst_0001.pmap")
    merged = merge_crds_env(defaults, {"CRDS_CONTEXT": "jwst_0002.pmap"})
    assert merged == {**defaults, "CRDS_CONTEXT": "jwst_0002.pmap"}


def test_a_cache_crds_cannot_read_is_an_error_not_an_exit(tmp_path):
    """crds ends the process (sys.exit(-1), status 255) when it reaches neither
    its server nor its cache; calstream gets an exception it can decide on
    (wait for the cache, or stop with its own message), crds_unreachable."""
    from calstream.steps.crds_env import CrdsCacheUnreachable, resolve_context
    from calstream.steps.failures import infrastructure_cause

    env = offline_crds_env(tmp_path / "not-mounted", "jwst_0001.pmap")
    with pytest.raises(CrdsCacheUnreachable) as caught:
        resolve_context(env)
    assert "not-mounted" in str(caught.value)
    assert infrastructure_cause(caught.value) == "crds_unreachable"
