"""Reading a replay's source topic: every record up to "now", each judged as
it comes by the replay's sieve (``deciders/replay_sieve.py``), which keeps
what the selection takes and what each partition still retains (its first
offset and time), for the coverage ``deciders/replay_selection.py`` decides;
and, where two arrivals of one exposure disagree, what its file says
(``arrival_judge``: deciders/replay_sieve.py's ``file_decides``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.admission import ExposureFacts, arrival_claims_problem, within_roots
from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.daemon.doers import kafka
from calstream.daemon.doers.digest_memo import digest_of, exposure_of
from calstream.daemon.operations.config import Config, ConfigError


async def scan(cfg: Config, name: str, sieve: ScanSieve) -> ScanSieve:
    """Every record of ``name`` up to the high watermarks, handed to
    ``sieve`` (returned, with every partition's high watermark set)."""
    async with kafka.open_reader(cfg, [name]) as reader:
        if not reader.partitions:
            raise ConfigError(f"topic {name} does not exist on {cfg.kafka_bootstrap}")
        for tp in reader.partitions:
            sieve.partition(tp.partition)
        # Bounded by the broker's silence, not by the topic's length: months of
        # records may take minutes to read, a broker gone quiet must not take for ever.
        async for batch in reader.batches_to_end(stall_seconds=cfg.broker_timeout_seconds):
            for r in batch:
                sieve.take(r)
        for tp, high in reader.high_watermarks().items():
            sieve.partition(tp.partition).high_watermark = high
        return sieve


def arrival_judge(inbox_roots: Iterable[str]) -> Callable[[dict[str, Any]], bool | None]:
    """Whether an arrival is its file as the file is now, read as detector1's
    admission reads it (its header and size, then its bytes' digest,
    remembered by the file's signature: digest_memo.py): True, it is; False,
    the file is there and says otherwise (another content, a header copy
    that is not its own, a path that is no regular file or leads outside
    ``inbox_roots``); None, no file there, or none this command can read
    (another host's inbox): nothing to tell by. A file is read only under
    ``inbox_roots``: a command that knows none makes no judge (run_replay),
    for a record may name any file the operator can read (session 46)."""
    roots = [Path(r).resolve() for r in inbox_roots]

    def judge(arrival: dict[str, Any]) -> bool | None:
        path = Path(str(arrival.get("path")))
        try:
            resolved = path.resolve(strict=True)
            if not resolved.is_file() or not within_roots(resolved, roots):
                return False  # a FIFO, a directory, a link out: never read
            exposure = exposure_of(resolved)
            facts = ExposureFacts(exposure.header, resolved.stat().st_size)
            if arrival_claims_problem(arrival, facts, False) is not None:
                return False
            return digest_of(resolved) == arrival.get("digest")
        except (OSError, RuntimeError):  # gone, unreadable here, a loop of links
            return None
        except Exception:  # noqa: BLE001 - BadExposure, or whatever else its bytes raise
            return False  # there, and not an exposure of its claims: never a stop
    return judge
