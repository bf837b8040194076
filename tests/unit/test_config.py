from pathlib import Path

import pytest

from calstream.daemon.operations.config import ConfigError, load


def test_precedence_file_then_environment_then_flags(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[calstream]\nworkers = 3\nmetrics_address = "0.0.0.0:9000"\n'
                        'topic_prefix = "file."\n[calstream.security]\nprotocol = "SASL_SSL"\n')
    env = {"CALSTREAM_WORKERS": "5", "CALSTREAM_TOPIC_PREFIX": "env.",
           "CALSTREAM_POLLING": "true", "UNRELATED": "x"}
    cfg = load(cfg_file, env=env, flags={"workers": 7, "work_dir": tmp_path})
    assert cfg.workers == 7  # flag beats environment beats file
    assert cfg.topic_prefix == "env."
    assert cfg.metrics_address == "0.0.0.0:9000"
    assert cfg.polling is True
    assert cfg.security.protocol == "SASL_SSL"
    assert cfg.inbox == tmp_path / "inbox" and cfg.allowed_roots == [tmp_path / "inbox"]


def test_unknown_settings_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="wokers"):
        load(None, env={"CALSTREAM_WOKERS": "2"})
    with pytest.raises(ConfigError, match="workers"):
        load(None, env={"CALSTREAM_WORKERS": "two"})
    with pytest.raises(ConfigError, match="role"):
        load(None, env={}, flags={"roles": ["detector2"]})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load(None, env={}, flags={"metrics_address": "nowhere"})
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", env={})


def test_defaults_need_no_configuration():
    cfg = load(None, env={})
    assert cfg.kafka_bootstrap is None  # the embedded broker
    assert set(cfg.roles) == {"watcher", "detector1", "planner", "stage2", "stage3"}
    assert cfg.products == Path("calstream-work/products").absolute()
