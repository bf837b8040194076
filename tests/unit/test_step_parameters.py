"""Step parameters the jwst way (issue 16): configured per pipeline and step as
strun's --steps.<step>.<arg>, per EXP_TYPE and per program, checked at load;
carried by the planner's orders; CRDS decides whatever is not configured."""

from __future__ import annotations

import pytest

from calstream.daemon.deciders.order_parameters import order_parameters, run_steps
from calstream.daemon.deciders.work_items import detector1_steps, work_order_item
from calstream.daemon.operations import embedded_default
from calstream.daemon.operations.config import ConfigError, load
from calstream.steps.pipeline_catalog import catalog
from calstream.steps.step_parameters import StepParameters

from .test_level3_state import SETTLE, T0, dither, feed, new_state, rate, stage3

FILE = """
[calstream.steps.calwebb_image3.tweakreg]
abs_refcat = "GAIADR3"
searchrad = 3
[calstream.steps.calwebb_image2.resample]
skip = true
[calstream.steps_by_exp_type.NRC_IMAGE.calwebb_image3.tweakreg]
searchrad = 1.5
[calstream.steps_by_program."01234".calwebb_image3.tweakreg]
abs_refcat = ""
[calstream.steps_by_program."01234".calwebb_detector1.jump]
rejection_threshold = 5.0
"""


def _load(tmp_path, text: str, env=None):
    path = tmp_path / "calstream.toml"
    path.write_text(text)
    return load(path, env=env or {})


def test_tables_per_pipeline_step_exp_type_and_program_narrower_wins(tmp_path):
    configured = _load(tmp_path, FILE).step_parameters()
    assert configured.for_run("calwebb_image3") == {
        "tweakreg": {"abs_refcat": "GAIADR3", "searchrad": 3}}
    assert configured.for_run("calwebb_image3", exp_type="NRC_IMAGE", program="01234") == {
        "tweakreg": {"abs_refcat": "", "searchrad": 1.5}}
    assert configured.for_run("calwebb_image3", exp_type="MIR_IMAGE", program="04321") == {
        "tweakreg": {"abs_refcat": "GAIADR3", "searchrad": 3}}
    assert configured.for_run("calwebb_spec2", exp_type="NRC_IMAGE") == {}
    assert configured.for_run("calwebb_detector1", program="01234") == {
        "jump": {"rejection_threshold": 5.0}}


def test_the_environment_takes_an_inline_table_too():
    cfg = load(None, env={"CALSTREAM_STEPS": '{calwebb_image3 = {tweakreg = {abs_refcat = ""}}}'})
    assert cfg.step_parameters().for_run("calwebb_image3") == {"tweakreg": {"abs_refcat": ""}}
    assert cfg.sources["steps"] == "env CALSTREAM_STEPS"


@pytest.mark.parametrize(("text", "message"), [
    ("[steps.calwebb_image4.tweakreg]\nabs_refcat = ''",
     r"unknown pipeline 'calwebb_image4' \(did you mean 'calwebb_image3'\?\)"),
    ("[steps]\ncalwebb_image3 = 3", r"steps.calwebb_image3: expected a table of steps"),
    ("[steps.calwebb_image3]\ntweakreg = 'x'", r"step 'tweakreg': expected a table"),
    ("[steps.calwebb_image3.tweakreeg]\nabs_refcat = ''",
     r"calwebb_image3 has no step 'tweakreeg' \(did you mean 'tweakreg'\?\)"),
    ("[steps.calwebb_image3.tweakreg]\nabs_refcatt = ''",
     r"tweakreg has no parameter 'abs_refcatt' \(did you mean 'abs_refcat'\?\)"),
    ("[steps.calwebb_image3.tweakreg]\nabs_refcat = 3", r"tweakreg.abs_refcat: 3 does not fit"),
    ("[steps.calwebb_image3.tweakreg]\nfitgeometry = 'banana'", r"does not fit .*option"),
    ("[steps.calwebb_image3.tweakreg]\nuse2dhist = 'yes'", r"does not fit .*boolean"),
    ("[steps.calwebb_image3.tweakreg]\nminobj = 2.5", r"does not fit .*integer"),
    ("[steps_by_exp_type.NRC_IMAG.calwebb_image3.tweakreg]\nskip = true",
     r"unknown EXP_TYPE 'NRC_IMAG' \(did you mean 'NRC_IMAGE'\?\)"),
    ("[steps_by_program.1234.calwebb_image3.tweakreg]\nskip = true",
     r"'1234' is not a program number"),
    ("steps = 3", r"bad value for steps: expected a table"),
])
def test_a_bad_table_is_a_configuration_error_naming_it(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


@pytest.mark.parametrize("setting", [
    "output_dir = '/elsewhere'", "output_file = 'x'", "input_dir = '/elsewhere'",
    "suffix = '../../x'", "output_ext = '/../x'", "pre_hooks = ['touch /tmp/x']",
    "post_hooks = ['os.system']"])
def test_where_a_run_writes_and_hooks_are_calstream_s_not_the_configuration_s(tmp_path, setting):
    # A product written elsewhere (or named with a "/") never reaches the
    # store, which seals and publishes the run's own directory; a hook runs
    # whatever it names after the step.
    with pytest.raises(ConfigError, match=r"steps.calwebb_image2.flat_field.\w+: calstream "
                                          r"(sets where a run reads and writes|runs no hooks)"):
        _load(tmp_path, f"[steps.calwebb_image2.flat_field]\n{setting}\n")


def test_every_step_takes_the_common_parameters(tmp_path):
    cfg = _load(tmp_path, "[steps.calwebb_spec2.resample_spec]\nskip = true\n"
                          "[steps.calwebb_detector1.ipc]\nskip = true\n")
    assert cfg.steps["calwebb_spec2"] == {"resample_spec": {"skip": True}}


def test_detector1_steps_is_an_alias_the_steps_table_wins(tmp_path, caplog):
    cfg = _load(tmp_path, "detector1_steps = {jump = {rejection_threshold = 4.0, skip = false}}\n"
                          "[steps.calwebb_detector1.jump]\nrejection_threshold = 6.0\n")
    assert cfg.step_parameters().for_run("calwebb_detector1") == {
        "jump": {"rejection_threshold": 6.0, "skip": False}}
    assert "detector1_steps is deprecated" in caplog.text
    arrival = {"exposure_id": "jw01234001001_02101_00001_nrcb1",
               "header": {"EXP_TYPE": "NRC_IMAGE"}}
    assert detector1_steps(cfg.step_parameters(), arrival) == {
        "jump": {"rejection_threshold": 6.0, "skip": False}}


def test_nothing_is_configured_by_default_so_crds_decides():
    cfg = load(None, env={})
    assert cfg.step_parameters() == StepParameters()
    assert order_parameters(cfg.step_parameters(), "calwebb_image3",
                            science={"exp_type": "NRC_IMAGE"}, program="01234") == {}


def test_the_embedded_default_switches_gaia_off_visibly(tmp_path):
    from calstream.daemon.operations.cli.config_show import effective_settings

    cfg = load(embedded_default.write(tmp_path), env={})
    [row] = [r for r in effective_settings(cfg) if r["setting"] == "steps"]
    assert row["value"] == {"calwebb_image3": {"tweakreg": {"abs_refcat": ""}}}
    assert row["source"].startswith("file ") and row["source"].endswith("calstream.toml")


def test_orders_carry_the_configured_steps_and_the_run_passes_them(tmp_path):
    configured = _load(tmp_path, FILE).step_parameters()
    state = new_state(step_parameters=configured)
    orders, stage2 = [], []
    for n in range(1, 5):
        emits = state.observe(rate(dither(n), T0 + 10 * n), T0 + 10 * n)
        stage2 += [e.message for e in emits if e.topic == "work.stage2"]
        orders += feed(state, dither(n), T0 + 10 * n)
    orders += stage3(state.tick(T0 + 100 + SETTLE))
    assert stage2 and all(o["parameters"]["steps"] == {"resample": {"skip": True}}
                          for o in stage2)
    [order] = orders
    assert order["parameters"] == {"steps": {"tweakreg": {"abs_refcat": "", "searchrad": 1.5}}}
    # The stage runs it with its own configuration's parameters, which are the order's.
    item = work_order_item(order.body, stage="stage3", task="t", key="", record=None,
                           steps=run_steps(configured, order.body))
    assert item.task_kwargs["steps"] == {"tweakreg": {"abs_refcat": "", "searchrad": 1.5}}
    # The parameters are part of the run's identity (steps/provenance.py).
    assert item.parameters["steps"] == item.task_kwargs["steps"]


def test_the_catalogue_knows_every_pipeline_calstream_routes_to():
    from calstream.steps.routing_terms import PIPELINE_CLASSES

    assert set(PIPELINE_CLASSES) <= set(catalog())
    assert catalog()["calwebb_wfs-image3"]["single_step"] == "wfs_combine"


def test_the_catalogue_is_the_installed_jwsts():
    """A new jwst: `python -m calstream.steps.pipeline_catalog --write`."""
    import json

    from calstream.steps.pipeline_catalog import CATALOG_FILE, from_installed_jwst

    assert json.loads(CATALOG_FILE.read_text()) == from_installed_jwst()
