"""What a broker's answers to creating the catalog's topics say (pure).

Each daemon creates the catalog's missing topics at start. A stricter site
creates them once with an admin and denies Create to the daemons; the
broker then answers TOPIC_AUTHORIZATION_FAILED (or CLUSTER_AUTHORIZATION_
FAILED, where Create is granted on the cluster) for each topic, in the
answer, not as an error the client raises: taken for a success, the
daemon ran on without its topics. Whatever the refusal, the topic is
missing, and only a person (an admin creating it, or granting Create) can
make it: the daemon waits for it (doers/start_waits.py), saying which
topics and why, and goes on once they are there.
"""

from __future__ import annotations

from collections.abc import Iterable

CREATED = 0
EXISTS = 36  # TOPIC_ALREADY_EXISTS: another daemon created it meanwhile
AUTHORIZATION = {29: "TOPIC_AUTHORIZATION_FAILED", 31: "CLUSTER_AUTHORIZATION_FAILED"}
NOT_TRIED = "not created by this daemon (create_topics = false): an admin creates it"
_MESSAGE_BUDGET = 200  # characters of the broker's own message kept


def answers(topic_errors: Iterable[tuple]) -> tuple[list[str], dict[str, str]]:
    """(the topics created, {topic: why it was not}) from a CreateTopics
    answer's ``topic_errors``: (topic, error code[, error message]) each. A
    topic that already exists is neither: it is there."""
    created, refused = [], {}
    for entry in topic_errors:
        name, code, *rest = entry
        message = str(rest[0])[:_MESSAGE_BUDGET] if rest and rest[0] else ""
        if code == CREATED:
            created.append(name)
        elif code != EXISTS:
            refused[name] = why_refused(code, message)
    return created, refused


def why_refused(code: int, message: str = "") -> str:
    """A refusal's reason, for /readyz and the log."""
    if code in AUTHORIZATION:
        return (f"not authorized to create it ({AUTHORIZATION[code]}): an admin creates it "
                "(`calstream topics create` with an admin's credentials), or grants Create")
    return f"the broker refused to create it (error code {code}{': ' + message if message else ''})"


UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION: the broker has no such topic
_ABSENT = {29: "TOPIC_AUTHORIZATION_FAILED", 5: "LEADER_NOT_AVAILABLE"}


def why_absent(code: int | None) -> str | None:
    """Why a topic the broker's listing leaves out is missing, by the error
    code its metadata answers for that topic asked by name (``create_topics
    = false``: nothing was tried); None if it answers none (it is there).
    Its listing of every topic leaves out, with no word, a topic this
    principal may not describe and one the broker errs on: each was said to
    be "not created", and an admin asked to create it found it there."""
    if code == 0:
        return None
    if code is None or code == UNKNOWN_TOPIC:
        return NOT_TRIED
    if code == 29:
        return ("there may be one, but this daemon may not describe it "
                "(TOPIC_AUTHORIZATION_FAILED): an admin grants Describe and Write (and "
                "creates it if there is none)")
    name = f"{_ABSENT[code]}, " if code in _ABSENT else ""
    return f"the broker answers an error for it ({name}error code {code}): see the broker's log"


def summary(missing: dict[str, str], limit: int = 5) -> str:
    """The missing topics and why, in one bounded line: grouped by reason,
    at most ``limit`` names each (a catalog has a score of topics)."""
    by_reason: dict[str, list[str]] = {}
    for name, why in sorted(missing.items()):
        by_reason.setdefault(why, []).append(name)
    parts = []
    for why, names in by_reason.items():
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                            if len(names) > limit else "")
        parts.append(f"{shown}: {why}")
    return f"{len(missing)} topic(s) missing: " + "; ".join(parts)
