"""``calstream promote NAMESPACE``: make a reprocessed namespace the products of
record (the switch itself is ``doers/promotion.py``), then announce it."""

from __future__ import annotations

import argparse
import sys

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.doers.product_store import ProductStore, check_namespace
from calstream.daemon.doers.promotion import PartialPromotion, PromotionRefused, promote
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    EXIT_GAP,
    broker_config,
    command,
    operator,
    reason_argument,
)
from calstream.topics.catalog import Topics


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("namespace", help="the namespace to promote ('live' switches back)")
    p.add_argument("--reason", type=reason_argument, help="why (recorded in the promotion event)")
    p.add_argument("--allow-partial", action="store_true",
                   help="promote a namespace that lacks products live has (they are no longer "
                        "of record after the switch)")


@command("promote", "make a reprocessed namespace the products of record", flags=(*DAEMON_FLAGS, "--by"), arguments=_arguments)
def cmd_promote(args: argparse.Namespace) -> int:
    # The broker is checked before the switch: a promotion nobody hears of is worse than none.
    cfg = broker_config(args, "promote")
    check_namespace(args.namespace)
    topics = Topics(cfg.topic_prefix)
    anyio.run(kafka.create_topics, cfg, topics)  # it answers, and the topic is there
    store = ProductStore(cfg.products, moved_from=cfg.products_moved_from)
    try:
        message = promote(store, args.namespace, reason=args.reason, by=operator(args),
                          allow_partial=args.allow_partial)
    except PromotionRefused as exc:
        print(f"calstream: {exc}", file=sys.stderr)
        return 1
    except PartialPromotion as exc:
        # Exit 3, as a replay reaching past retention: a gap, to be accepted by name.
        print("\n".join([
            f"calstream: not promoted: {exc}; readers of `current` would no longer find:",
            *exc.gap.lines(args.namespace),
            f"nothing was switched. Replay the rest into {args.namespace} (`calstream replay "
            f"--namespace {args.namespace} --from raw ...`), or promote it as it is with "
            f"`calstream promote {args.namespace} --allow-partial`"]), file=sys.stderr)
        return EXIT_GAP
    # After the switch, never before: a subscriber reacting to the event must
    # find the link already switched.
    try:
        anyio.run(send_messages, cfg, topics.name("promotions"),
                  [(message["namespace"], message)])
    except BaseException:  # Ctrl-C too: the switch is done, and the operator must know
        print(f"calstream: {message['current_link']} now serves {args.namespace}, but its "
              f"promotion event was not published: `calstream promote {args.namespace}` "
              "again publishes it", file=sys.stderr)
        raise
    print(f"promoted {message['namespace']} (was {message['previous']}): "
          f"{message['current_link']} -> {message['tree']}; {message['records']} work item(s)")
    return 0
