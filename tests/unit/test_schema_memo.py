"""A worker parses each datamodel schema once and freezes what its first runs
leave alive (steps/schema_memo.py, steps/worker_warmup.py).

Both change process-wide state (asdf's loader, the garbage collector), so
they run in a fresh interpreter, never in the test process."""

import json
import subprocess
import sys
import textwrap

# The same assignments, valid and invalid, validated with and without the
# memo: the outcomes must be the same, the memo must have served the
# repeated ones, and every schema it kept must still be what a fresh parse of
# its resource gives (a validator that wrote into a shared schema would show).
_VALIDATE = textwrap.dedent("""
    import json, sys, warnings
    from calstream.steps import schema_memo

    use_memo = sys.argv[1] == "memo"
    if use_memo:
        assert schema_memo.remember_parsed_schemas()
        assert schema_memo.remember_parsed_schemas()  # idempotent
    from stdatamodels.jwst import datamodels

    def outcomes():
        got = []
        for value in ("NRC_IMAGE", "NOT_AN_EXPOSURE_TYPE", "MIR_IMAGE", 12, "NRC_IMAGE"):
            model = datamodels.RampModel((2, 3, 8, 8))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    model.meta.exposure.type = value
                    got.append(["set", model.meta.exposure.type, sorted(
                        type(w.message).__name__ for w in caught)])
                except Exception as exc:  # noqa: BLE001 - the outcome is compared
                    got.append(["raised", type(exc).__name__])
            model.meta.exposure.nints = 3
            model.meta.subarray.name = "SUB160"
            model.close()
        return got

    first = outcomes()
    parsed_after_first = len(schema_memo.remembered())
    second = outcomes()
    out = {"outcomes": first, "again": second,
           "parsed_after_first": parsed_after_first,
           "parsed_after_second": len(schema_memo.remembered())}
    if use_memo:
        out["unchanged"] = all(schema_memo.parse_afresh(url)[0] == kept[0]
                               for url, kept in schema_memo.remembered().items())
    print(json.dumps(out))
""")


def _run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_validation_gives_the_same_outcomes_with_each_schema_parsed_once():
    plain = _run(_VALIDATE, "plain")
    memo = _run(_VALIDATE, "memo")
    assert memo["outcomes"] == plain["outcomes"] == plain["again"] == memo["again"]
    # The invalid value is still caught (a warning, as stdatamodels does by
    # default), not silently accepted.
    invalid = plain["outcomes"][1]
    assert invalid[0] == "raised" or "ValidationWarning" in invalid[2]
    # Schemas were parsed and kept, and the second pass needed no new one.
    assert memo["parsed_after_first"] > 0
    assert memo["parsed_after_second"] == memo["parsed_after_first"]
    assert memo["unchanged"] is True
    assert plain["parsed_after_first"] == 0  # not installed: nothing kept


_FREEZE = textwrap.dedent("""
    import gc, json
    from calstream.steps.worker_warmup import freeze_survivors
    gc.collect(); gc.freeze()
    start = gc.get_freeze_count()
    out = {"idle": freeze_survivors(1000)}

    garbage = [[] for _ in range(3000)]
    for a, b in zip(garbage, garbage[1:] + garbage[:1]):
        a.append(b)  # one big cycle: garbage once dropped, alive to a count
    del garbage, a, b
    out["garbage"] = freeze_survivors(1000)
    out["frozen_after_garbage"] = gc.get_freeze_count() - start

    kept = [[i] for i in range(3000)]  # alive: a run's caches (lists: always tracked)
    out["survivors"] = freeze_survivors(1000)
    out["frozen_after_survivors"] = gc.get_freeze_count() - start
    out["again"] = freeze_survivors(1000)
    print(json.dumps(out))
""")


def test_what_runs_leave_alive_is_frozen_and_garbage_is_collected_first():
    out = _run(_FREEZE)
    assert out["idle"] is False
    # Past the threshold it collects and freezes: dropped cycles are
    # collected, not frozen (3,000 lists of garbage, almost none frozen).
    assert out["garbage"] is True and out["frozen_after_garbage"] < 300
    # Live objects past the threshold are frozen, once.
    assert out["survivors"] is True
    assert out["frozen_after_survivors"] - out["frozen_after_garbage"] >= 3000
    assert out["again"] is False
