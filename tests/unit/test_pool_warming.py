"""Which pools warm their workers at start (warm_workers): the decision, the
setting's parsing, and a pool that starts its workers on its first run."""

import pytest

from calstream.daemon.deciders.pool_warming import check_warm_workers, warms_at_start
from calstream.daemon.operations.config import ConfigError, load

STAGES = ("detector1", "stage2", "stage3")


def test_every_pool_warms_at_start_by_default():
    cfg = load(None, env={})
    assert cfg.warm_workers == ["at_start"]
    assert all(warms_at_start(cfg.warm_workers, s) for s in STAGES)


def test_on_first_work_warms_no_pool_at_start():
    assert not any(warms_at_start(["on_first_work"], s) for s in STAGES)


def test_named_stages_warm_at_start_and_the_others_on_first_work():
    setting = ["detector1", "stage2"]
    assert [warms_at_start(setting, s) for s in STAGES] == [True, True, False]


@pytest.mark.parametrize("setting, message", [
    (["at_start", "stage2"], "'at_start' stands alone"),
    (["on_first_work", "at_start"], "stands alone"),
    (["stage4"], "unknown stage"),
    ([], "empty"),
])
def test_nonsense_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        check_warm_workers(setting, STAGES)


def test_the_setting_comes_from_every_source():
    assert load(None, env={"CALSTREAM_WARM_WORKERS": "on_first_work"}).warm_workers == [
        "on_first_work"]
    assert load(None, env={}, flags={"warm_workers": "detector1, stage2"}).warm_workers == [
        "detector1", "stage2"]
    with pytest.raises(ConfigError, match="CALSTREAM_WARM_WORKERS\\): unknown stage"):
        load(None, env={"CALSTREAM_WARM_WORKERS": "detectr1"})
