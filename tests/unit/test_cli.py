"""The ``calstream`` command line: every command in the one registry, with the
options it has always had (a rename or a lost flag breaks operators' scripts)."""

import argparse

from calstream.daemon.operations.cli.main import build_parser
from calstream.daemon.operations.cli.registry import COMMANDS, DAEMON_FLAGS, deployment_config

DAEMON = set(DAEMON_FLAGS)
BROKER = {"--config", "--kafka-bootstrap", "--topic-prefix"}
SELECTION = {"--since", "--until", "--program", "--observation", "--visit", "--exposure",
             "--instrument", "--exp-type"}
DL_SELECTION = {"--category", "--reason-contains", "--stage", "--exposure", "--since", "--until"}

# command -> (options, positional arguments)
EXPECTED = {
    "run": (DAEMON | {"--role"}, ()),
    "demo": ({"--work-dir", "--workers", "--metrics-address", "--log-level", "--timeout",
              "--seed"}, ()),
    "simulate": ({"--seed", "--program", "--subarray", "--dithers", "--detectors", "--planned",
                  "--no-references", "--modes", "--inbox", "--interval", "--pieces",
                  "--piece-delay", "--log-level"}, ("out_dir",)),
    "topics": (DAEMON | {"--principal", "--no-create"}, ("action",)),
    "status": (BROKER | {"--work-dir", "--group-prefix", "--metrics-url", "--dead-letters", "--products",
                         "--timeout", "--json", "--log-level"}, ()),
    "holds list": (DAEMON | {"--all", "--json"}, ()),
    "holds release": (DAEMON | {"--reason", "--by"}, ("exposure",)),
    "deadletters list": (DAEMON | DL_SELECTION | {"--pending", "--limit", "--json"}, ("refs",)),
    "deadletters show": (DAEMON, ("ref",)),
    "deadletters redrive": (DAEMON | DL_SELECTION | {"--reason", "--by", "--all", "--again",
                                                      "--unverified", "--dry-run"}, ("refs",)),
    "plan load": (DAEMON | {"--by", "--dry-run"}, ("file",)),
    "plan list": (DAEMON | {"--json"}, ()),
    "subscribe": (BROKER | {"--work-dir", "--group", "--program", "--observation", "--stage", "--pipeline",
                            "--namespace", "--suffix", "--exposure", "--since", "--format",
                            "--write-dir", "--max", "--until-idle"}, ()),
    "replay": (DAEMON | SELECTION | {"--from", "--namespace", "--crds-context", "--dry-run",
                                     "--allow-gap", "--json", "--by"}, ()),
    "promote": (DAEMON | {"--reason", "--by", "--allow-partial"}, ("namespace",)),
    "config": (DAEMON | {"--json"}, ("action",)),
    "console": (DAEMON | {"--address"}, ()),
}


def leaf_parsers(parser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from leaf_parsers(child, (*prefix, name))


def test_every_command_keeps_its_options():
    found = {}
    for name, p in leaf_parsers(build_parser()):
        options = {o for a in p._actions for o in a.option_strings} - {"-h", "--help"}
        found[name] = (options, tuple(a.dest for a in p._actions if not a.option_strings))
    assert found == EXPECTED
    assert set(COMMANDS) == set(EXPECTED)  # one registry
    assert list(found) == list(EXPECTED)  # --help's order, whatever was imported first


def test_only_the_commands_own_shared_flags_reach_the_configuration(tmp_path):
    # status's --products is a count of events, not the product store.
    args = build_parser().parse_args(["status", "--products", "3", "--kafka-bootstrap", "b:1"])
    cfg = deployment_config(args)
    assert cfg.kafka_bootstrap == "b:1" and str(cfg.products) != "3"
    args = build_parser().parse_args(["holds", "list", "--products", str(tmp_path)])
    assert deployment_config(args).products == tmp_path


def test_topics_a_principal_may_not_create_are_one_line_and_exit_1(monkeypatch, capsys):
    """`topics create` (and promote, plans load) as a principal the broker
    refuses Create: the topics and why, no traceback."""
    from calstream.daemon.deciders import topic_creation
    from calstream.daemon.doers import kafka
    from calstream.daemon.operations.cli import main as cli_main

    async def refused(cfg, topics, **_):
        raise kafka.TopicsMissing({topics.name("raw"): topic_creation.why_refused(29)})

    monkeypatch.setattr(kafka, "create_topics", refused)
    code = cli_main.main(["topics", "create", "--kafka-bootstrap", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1 and "1 topic(s) missing: calstream.raw: not authorized" in err, err
