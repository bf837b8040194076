import json
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
    assert cfg.preview_max_wait == 300.0  # previews wait for calibrations, bounded


# -- nonsense is refused, the same way from every source ---------------------

@pytest.mark.parametrize("env, message", [
    ({"CALSTREAM_POLLING": "ture"}, "polling \\(CALSTREAM_POLLING\\): expected true or false, got 'ture'"),
    ({"CALSTREAM_JSON_LOGS": "2"}, "expected true or false"),
    ({"CALSTREAM_WORKERS": "4.5"}, "CALSTREAM_WORKERS\\): expected a whole number"),
    ({"CALSTREAM_WORKERS": "0"}, "must be > 0"),
    ({"CALSTREAM_TASK_TIMEOUT": "soon"}, "CALSTREAM_TASK_TIMEOUT"),
    ({"CALSTREAM_POLL_INTERVAL": "nan"}, "POLL_INTERVAL"),
    ({"CALSTREAM_LOG_LEVEL": "LOUD"}, "'LOUD' is not one of DEBUG"),
    ({"CALSTREAM_ROLES": "watcher,detectr1"}, "did you mean 'detector1'"),
    ({"CALSTREAM_SECURITY_PROTOCOL": "SASL_SSLL"}, "did you mean 'SASL_SSL'"),
    ({"CALSTREAM_DETECTOR1_STEPS": "jump=5"}, "CALSTREAM_DETECTOR1_STEPS\\): not a TOML or JSON"),
    ({"CALSTREAM_DETECTOR1_STEPS": "{jump = 5}"}, "step 'jump': expected a table"),
    ({"CALSTREAM_KAFKA_BOOTSTRAP": "kafka"}, "not HOST:PORT"),
    ({"CALSTREAM_PREVIEW_MAX_WAIT": "-5"}, "PREVIEW_MAX_WAIT\\): must be >= 0"),
    ({"CALSTREAM_WOKERS": "2"}, "unknown setting 'wokers' \\(CALSTREAM_WOKERS\\) "
                                "\\(did you mean 'CALSTREAM_WORKERS'\\?\\)"),
])
def test_nonsense_in_the_environment_is_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        load(None, env=env)


@pytest.mark.parametrize("toml, message", [
    ("workers = 4.5", "bad value for workers: expected a whole number, got 4.5"),
    ("workers = true", "expected a whole number"),
    ('polling = "ture"', "expected true or false"),
    ("topic_prefix = 5", "expected a non-empty string"),
    ('work_dir = ""', "work_dir"),
    ('roles = "planer"', "did you mean 'planner'"),
    ("detector1_steps = 3", "expected a table"),
    ("max_attempts = -1", "must be > 0"),
    # A worker polls this long: poll() itself refuses ~1e9 s, which would end
    # every worker at its first idle moment.
    ("worker_idle_return_seconds = 1e9", "must be <= 604800"),
    ("worker_idle_return_seconds = -1", "must be >= 0"),
    # The grace of a stopped worker (0: never killed for a stop), bounded.
    ("worker_stopped_seconds = -1", "bad value for worker_stopped_seconds: must be >= 0"),
    ("worker_stopped_seconds = 1e9", "worker_stopped_seconds: must be <= 604800"),
    ('worker_stopped_seconds = "soon"', "worker_stopped_seconds: expected a number of seconds"),
    # A preview's wait for no calibration in flight, bounded (0: no wait).
    ("preview_max_wait = -1", "bad value for preview_max_wait: must be >= 0"),
    ("preview_max_wait = nan", "preview_max_wait: expected a number of seconds"),
    ('preview_max_wait = "soon"', "preview_max_wait: expected a number of seconds"),
    ("preview_max_wait = 1e300", "preview_max_wait: must be <= 604800"),
    ("poling = true", "unknown setting 'poling' \\(did you mean 'polling'\\?\\)"),
    ('[security]\nsasl_pasword = "x"', "did you mean 'security.sasl_password'"),
])
def test_nonsense_in_the_file_is_refused(tmp_path, toml, message):
    f = tmp_path / "c.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load(f, env={})


@pytest.mark.parametrize("toml, message", [
    # A key before the [calstream] header is a top-level one.
    ('workers = 8\n[calstream]\ninbox = "/srv/inbox"',
     "'workers' is outside the \\[calstream\\] table"),
    # A table that should have been [calstream.security] or [calstream.steps...].
    ('[calstream]\nworkers = 8\n[security]\nprotocol = "SASL_SSL"',
     "'security' is outside the \\[calstream\\] table.*\\[calstream.security\\]"),
    ('[calstream]\n[steps.calwebb_detector1.jump]\nrejection_threshold = 5.0',
     "'steps' is outside the \\[calstream\\] table"),
    ('[calstrem]\nworkers = 8\n[calstream]\npolling = true', "'calstrem' is outside"),
    ("calstream = 3", "\\[calstream\\] must be a table"),
])
def test_settings_outside_the_calstream_table_are_refused(tmp_path, toml, message):
    """With a [calstream] table, every setting is in it: the rest of the file
    was ignored without a word (a `[security]` table: the daemon connected in
    PLAINTEXT; `[steps.calwebb_detector1.jump]`: no step parameter applied;
    a key above the header: the default used instead)."""
    f = tmp_path / "c.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load(f, env={})


def test_flags_go_through_the_same_parsers():
    with pytest.raises(ConfigError, match="--workers\\): must be > 0"):
        load(None, env={}, flags={"workers": 0})
    with pytest.raises(ConfigError, match="--log-level"):
        load(None, env={}, flags={"log_level": "chatty"})
    assert load(None, env={}, flags={"log_level": "debug"}).log_level == "DEBUG"


def test_environment_values_become_their_setting_type():
    cfg = load(None, env={
        "CALSTREAM_POLLING": "off", "CALSTREAM_WORKERS": " 3 ",
        "CALSTREAM_DETECTOR1_STEPS": "{jump = {rejection_threshold = 5.0}, ipc = {skip = true}}",
        "CALSTREAM_ROLES": '["planner", "stage3"]', "CALSTREAM_CRDS_CONTEXT": "",
        "CALSTREAM_STAGE3_SETTLE": "10"})
    assert cfg.polling is False and cfg.workers == 3
    assert cfg.detector1_steps == {"jump": {"rejection_threshold": 5.0}, "ipc": {"skip": True}}
    assert cfg.roles == ["planner", "stage3"] and cfg.crds_context is None
    assert cfg.stage3_settle == 10.0
    json_steps = load(None, env={"CALSTREAM_DETECTOR1_STEPS": '{"jump": {"skip": true}}'})
    assert json_steps.detector1_steps == {"jump": {"skip": True}}


def test_the_stage2_wait_of_stage3_is_no_shorter_than_the_quiet_period():
    assert load(None, env={}).stage3_stage2_wait == 6 * 3600.0
    cfg = load(None, env={"CALSTREAM_STAGE3_STAGE2_WAIT": "7200"})
    assert cfg.stage3_stage2_wait == 7200.0
    with pytest.raises(ConfigError, match="stage3_quiet_period <= stage3_stage2_wait"):
        load(None, env={}, flags={"stage3_stage2_wait": 600.0})
    with pytest.raises(ConfigError, match="STAGE3_STAGE2_WAIT"):
        load(None, env={"CALSTREAM_STAGE3_STAGE2_WAIT": "-1"})


def test_secrets_are_masked_in_repr_errors_and_config_show(tmp_path, capsys):
    from calstream.daemon.operations.cli.main import main

    env = {"CALSTREAM_SECURITY_SASL_PASSWORD": "hunter2", "CALSTREAM_SECURITY_SASL_USERNAME": "u"}
    cfg = load(None, env=env)
    assert cfg.security.sasl_password == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in repr(cfg.security)
    assert "sasl_password='********'" in repr(cfg.security)
    f = tmp_path / "c.toml"
    f.write_text("[calstream.security]\nsasl_password = 12345\n")
    with pytest.raises(ConfigError) as err:
        load(f, env={})
    assert "12345" not in str(err.value) and "sasl_password" in str(err.value)

    f.write_text("[calstream]\nworkers = 3\n")
    import os
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        assert main(["config", "show", "--config", str(f), "--workers", "5",
                     "--work-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert main(["config", "show", "--config", str(f), "--json"]) == 0
        rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert "hunter2" not in out and "********" in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["workers"].split()[1] == "5" and lines["workers"].endswith("flag --workers")
    assert lines["security.sasl_password"].endswith("env CALSTREAM_SECURITY_SASL_PASSWORD")
    assert lines["topic_prefix"].endswith("default")
    assert lines["inbox"].endswith("default (work_dir/inbox)")
    assert rows["workers"] == {"setting": "workers", "value": 3, "source": f"file {f}"}
    assert rows["security.sasl_password"]["value"] == "********"


def test_the_stopped_worker_grace_is_a_setting_each_stage_pool_takes(tmp_path):
    """The pool's 60 s grace before a stopped (SIGSTOP, frozen) worker is
    killed was fixed: a site whose runs are paused on purpose (a cgroup
    frozen for a snapshot) could not lengthen it, nor another shorten it."""
    from calstream.daemon.runtime import Daemon
    from calstream.daemon.stages import STAGES, stage_config

    assert load(None, env={}).worker_stopped_seconds == 60.0
    cfg = load(None, env={"CALSTREAM_WORKER_STOPPED_SECONDS": "5"},
               flags={"work_dir": tmp_path})
    assert cfg.worker_stopped_seconds == 5.0
    daemon = Daemon(cfg)
    for st in STAGES:
        pool = daemon._stage_pool(stage_config(st, daemon.cfg), st)
        assert pool.stopped_seconds == 5.0, st.name
        pool.close()
