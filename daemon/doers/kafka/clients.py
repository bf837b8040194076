"""Kafka clients (aiokafka) configured the same way for every role.

Everything here must work on tansu and on Apache Kafka: no idempotent or
transactional producer (aiokafka cannot on tansu), acks=all, manual commits,
``auto_offset_reset="earliest"`` with committed offsets.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from calstream.daemon.operations.config import Config, ConfigError
from calstream.steps.failures import error_text
from calstream.steps.regular_files import RECORD_LIMIT, open_regular_file

FETCH_MAX_WAIT_MS = 100
MAX_BATCH_BYTES = 256 * 1024


# aiokafka's defaults: the group session time-out, which its rebalance
# time-out takes, and how long the broker may hold a fetch.
DEFAULT_REBALANCE_MS = 10000
DEFAULT_FETCH_WAIT_MS = 500


def client_options(cfg: Config, *, held_ms: int = 0) -> dict[str, Any]:
    """What every client is given: the broker, the security settings, and
    how long a request may go unanswered before it fails as a broker fault
    (``broker_timeout_seconds``). ``held_ms``: how long the broker may hold
    one of this client's requests on purpose (a group member's join waits
    for the group's rebalance), added so that a wait the broker is allowed
    is not taken for a broker gone."""
    sec = cfg.security
    opts: dict[str, Any] = {"bootstrap_servers": cfg.kafka_bootstrap,
                            "security_protocol": sec.protocol,
                            "request_timeout_ms": int(cfg.broker_timeout_seconds * 1000) + held_ms}
    if sec.protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = _ssl_context(sec)
    if sec.protocol.startswith("SASL_"):
        opts.update(sasl_mechanism=sec.sasl_mechanism or "PLAIN",
                    sasl_plain_username=sec.sasl_username,
                    sasl_plain_password=sec.sasl_password)
    return opts


def producer(cfg: Config) -> AIOKafkaProducer:
    # linger_ms=0: every publish waits for its acknowledgement (send_and_wait),
    # so a linger batches nothing and only delays each one: 5 ms cost ~5 ms
    # on each of an exposure's arrival and product events (issue 15).
    # Records sent while a request is in flight still go out together.
    # max_batch_size: how many of those go in one batch of a partition. The
    # planner hands over a fetch's work orders (~2 kB each) without waiting
    # (doers/planner_publishing.py): with aiokafka's 16 KiB, every seventh
    # opened a batch, and a request carried ~17 orders; at 256 KiB the
    # planner spends 6 % less CPU an event (bench/planner_sends.py). Kept
    # far below a broker's 1 MB limit on a batch (message.max.bytes).
    return AIOKafkaProducer(**client_options(cfg), acks="all", linger_ms=0,
                            max_batch_size=MAX_BATCH_BYTES)


def _group_timing(cfg: Config) -> dict[str, int]:
    # Kafka's defaults make the first join take ~5 s and a rejoin ~18 s on
    # tansu; tests and the demo use these (measured in notes/kafka-broker.md).
    if not cfg.fast_group_timing:
        return {}
    return dict(session_timeout_ms=2000, heartbeat_interval_ms=300, rebalance_timeout_ms=1000)


def _rebalance_ms(timing: dict[str, int]) -> int:
    return timing.get("rebalance_timeout_ms", DEFAULT_REBALANCE_MS)


def group_consumer(cfg: Config, group: str,
                   fetch_wait_ms: int = FETCH_MAX_WAIT_MS) -> AIOKafkaConsumer:
    """A stage's group member with manual commits; the caller subscribes it.
    ``fetch_wait_ms``: the stage's own (stages.py), where it is not latency's."""
    timing = _group_timing(cfg)
    return AIOKafkaConsumer(
        **client_options(cfg, held_ms=max(_rebalance_ms(timing), fetch_wait_ms)), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=50,
        # Calibration never runs on the poll loop, so the default poll interval
        # holds; this is a backstop, not what keeps the member alive.
        max_poll_interval_ms=600000, **timing,
        # How long the broker may hold a fetch with nothing to return. Apache
        # Kafka answers as soon as a record comes, whatever this says; tansu
        # often answers later, so with the default 500 a new record waited
        # ~40 ms median, up to ~250 (a work item's hop from its
        # announcement to its stage; issue 15). 100: ~9 ms median, 36 at
        # most, for ~8 ms of CPU a second per idle consumer on each side
        # (notes in bench/README.md, session 8).
        fetch_max_wait_ms=fetch_wait_ms,
    )


def subscriber(cfg: Config, topic: str, group: str | None) -> AIOKafkaConsumer:
    """A downstream reader of ``topic``: in ``group`` (commits are the caller's,
    after handling) or, without one, every partition from the beginning."""
    # Without a committed offset (a new group, or no group at all) start at
    # the oldest retained record.
    # A product reaches a subscriber as soon as it reaches a stage (see
    # group_consumer's fetch wait), not up to ~250 ms later.
    timing = _group_timing(cfg) if group else {}
    held = max(_rebalance_ms(timing) if group else 0, FETCH_MAX_WAIT_MS)
    return AIOKafkaConsumer(topic, **client_options(cfg, held_ms=held), group_id=group,
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **timing)


async def commit_handled(consumer: AIOKafkaConsumer, offsets: dict) -> str | None:
    """Commit a subscriber's handled ``offsets`` (partition -> next offset);
    None, or why its group refused them: it rebalanced since they were
    fetched (a member came or went, or the broker started again and forgot
    the group). aiokafka raised that out of the subscriber, which ended; the
    records come again once the group is joined again, and the subscriber
    knows them (their event ids). A broker that does not answer is waited
    for inside aiokafka's commit, as before."""
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        return type(exc.__cause__ or exc).__name__
    return None


def reader(cfg: Config, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group: it commits nothing and is assigned partitions."""
    held = options.get("fetch_max_wait_ms", DEFAULT_FETCH_WAIT_MS)
    return AIOKafkaConsumer(**client_options(cfg, held_ms=held), group_id=None,
                            enable_auto_commit=False, auto_offset_reset="earliest", **options)


async def stopped(client: Any) -> None:
    """``client.stop()``, shielded. With its broker gone, aiokafka's stop
    re-raises the CancelledError of its own fetch task (cancelled while it
    waited to retry the broker): no cancellation of the caller's (shielded
    here); raised, it would end the task that closes the client (a planner
    restore's reader after a stall, and with it the daemon)."""
    with anyio.CancelScope(shield=True):
        try:
            await client.stop()
        except anyio.get_cancelled_exc_class():
            pass


def admin(cfg: Config) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(cfg))


NO_METADATA = "Unable to get cluster metadata over all known brokers"


def unreachable(exc: BaseException) -> str | None:
    """Why the broker could not be reached, or stopped answering, if that is
    what ``exc`` (or an exception inside its group) says; None for anything
    else. A command that cannot reach its broker says so in one line, not
    with aiokafka's traceback."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return str(exc).removeprefix(f"{type(exc).__name__}: ")
    if type(exc) is KafkaError and NO_METADATA in str(exc):
        # aiokafka's own words when no broker answered a metadata request
        # (client.fetch_all_metadata, under consumer.topics()): a bare
        # KafkaError, neither retriable nor a time-out, so a broker stopped
        # just then ended the planner's start instead of being waited for.
        return NO_METADATA
    for inner in getattr(exc, "exceptions", ()):  # an anyio task group's ExceptionGroup
        if (reason := unreachable(inner)) is not None:
            return reason
    return None


def _ssl_context(sec: Any) -> ssl.SSLContext:
    """The TLS context of every client; a CA or client certificate file that
    cannot be read as one is the configuration's mistake, named (ConfigError):
    no wait makes it readable."""
    setting = "security.ssl_cafile"
    try:
        # OpenSSL opens them by name and reads to the end: a FIFO there (a
        # secret mounted as a pipe, a typo) held the start for ever, /dev/zero
        # filled the memory. Each is judged first, as calstream's records are.
        for setting, path in (("security.ssl_cafile", sec.ssl_cafile),  # noqa: B007 - named below
                              ("security.ssl_certfile", sec.ssl_certfile),
                              ("security.ssl_keyfile", sec.ssl_keyfile)):
            if path:
                open_regular_file(path, limit=RECORD_LIMIT).close()
        setting = "security.ssl_cafile"
        ctx = ssl.create_default_context(cafile=sec.ssl_cafile)
        if sec.ssl_certfile:
            setting = "security.ssl_certfile / security.ssl_keyfile"
            ctx.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        path = getattr(exc, "filename", None) or {
            "security.ssl_cafile": sec.ssl_cafile, "security.ssl_keyfile": sec.ssl_keyfile,
        }.get(setting, sec.ssl_certfile)
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{setting} {path}: cannot be used as a certificate: {why}") from None
    return ctx


# A handshake the broker refused for the certificate it was shown (OpenSSL's
# names of the TLS alerts), or one spoken to a port that is no TLS listener.
_REFUSED_HANDSHAKE = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA",
                      "ALERT_CERTIFICATE_UNKNOWN", "ALERT_ACCESS_DENIED", "WRONG_VERSION_NUMBER")
_SASL_REFUSED = (AuthenticationFailedError, SaslAuthenticationFailed,
                 UnsupportedSaslMechanismError)


async def refused_settings(cfg: Config) -> str | None:
    """Why the broker refuses this client's TLS or SASL settings, if it does;
    None if it does not or cannot be reached at all (worth waiting for).

    aiokafka's clients log a failed handshake or authentication and raise
    only "Unable to bootstrap", as for a broker that is not there; so this
    connects once itself, with the clients' own settings, and reads what
    the connection raised."""
    sec = cfg.security
    if sec.protocol == "PLAINTEXT":
        return None
    opts = client_options(cfg)
    for host, port, _ in collect_hosts(cfg.kafka_bootstrap):
        where = f"the broker {host}:{port}"
        try:
            conn = await create_conn(
                host, port, request_timeout_ms=10000, ssl_context=opts.get("ssl_context"),
                security_protocol=sec.protocol, sasl_mechanism=opts.get("sasl_mechanism"),
                sasl_plain_username=sec.sasl_username, sasl_plain_password=sec.sasl_password)
        except ssl.SSLCertVerificationError as exc:
            return (f"security.ssl_cafile ({sec.ssl_cafile or 'the system CAs'}): {where}'s "
                    f"certificate does not verify: {exc.verify_message}")
        except ssl.SSLError as exc:
            if any(r in str(exc.reason) for r in _REFUSED_HANDSHAKE):
                return (f"security.protocol {sec.protocol} / security.ssl_certfile: {where} "
                        f"refuses the TLS handshake: {exc.reason}")
        except _SASL_REFUSED as exc:
            return _sasl_refused(sec, where, exc)
        except (TimeoutError, OSError, KafkaError):
            continue  # not there (yet): a fault of the world, not of the settings
        except Exception as exc:
            # aiokafka's SASL exchange reading an answer that is no success
            # (tansu's SCRAM refusal: KeyError 'v'): the broker said no.
            if sec.protocol.startswith("SASL_"):
                return _sasl_refused(sec, where, exc)
            raise
        else:
            conn.close()
    return None


def _sasl_refused(sec: Any, where: str, exc: BaseException) -> str:
    return (f"security.sasl_mechanism / sasl_username / sasl_password "
            f"({sec.sasl_mechanism or 'PLAIN'}, user {sec.sasl_username!r}): {where} refuses "
            f"the SASL authentication: {error_text(exc, 200)}")
