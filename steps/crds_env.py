"""How calstream configures CRDS: the way a jwst user would, through the environment.

A user's own CRDS_PATH / CRDS_SERVER_URL / CRDS_CONTEXT always win: calstream
only fills in what is absent (`merge_crds_env`), and only for the offline,
synthetic case does it point crds at a local cache (`offline_crds_env`).

crds reads its configuration once per process: the server URL when crds is
imported, and the context on first use (it caches both). A warm worker that
is told to use another context (a replay) must make crds forget; call
`refresh_crds` after changing the environment. `resolve_context` reports the
context crds will actually use, by asking crds itself.
"""

from __future__ import annotations

import ast
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from calstream.steps.environment import environ

OBSERVATORY = "jwst"
CRDS_VARS = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_CONTEXT", "CRDS_MODE", "CRDS_OBSERVATORY")
# crds makes no network call when the server URL contains "serverless".
SERVERLESS_URL = "https://jwst-serverless-mode.stsci.edu"
# crds's own default when CRDS_SERVER_URL is unset (crds/__init__.py).
_CRDS_DEFAULT_URL = "https://crds-serverless-mode.stsci.edu"

_lock = threading.RLock()
_applied: dict[str, str | None] | None = None


def cache_default_context(crds_path: str | Path) -> str:
    """The operational context recorded in a cache's server_config."""
    path = Path(crds_path) / "config" / OBSERVATORY / "server_config"
    info = ast.literal_eval(path.read_text())
    return str(info.get("operational_context") or info["latest_context"])


def offline_crds_env(crds_path: str | Path, context: str | None = None) -> dict[str, str]:
    """Environment for resolving references from a local cache with no server.

    `context` defaults to the cache's own operational context, so the value is
    explicit (a jwst run with no CRDS_CONTEXT would otherwise ask the server
    for the build context of the installed jwst, and fall back quietly).
    """
    crds_path = Path(crds_path).resolve()
    return {
        "CRDS_PATH": str(crds_path),
        "CRDS_CONTEXT": context or cache_default_context(crds_path),
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": SERVERLESS_URL,
    }


class CrdsCacheUnreachable(RuntimeError):
    """crds could load its rules neither from its server nor from its cache."""


def crds_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CRDS variables that are set (non-empty): none means CRDS is not configured."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in CRDS_VARS if environ.get(k)}


def merge_crds_env(
    defaults: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The CRDS variables to run with: the user's where set, `defaults` elsewhere.

    A user who set CRDS_PATH chose their own cache, so the defaults' server,
    mode and context (which describe another cache) are not mixed in; only a
    user with no CRDS_PATH gets the defaults filled in around their settings.
    """
    user = crds_settings(environ)
    if "CRDS_PATH" in user:
        return user
    return {**{k: v for k, v in defaults.items() if k in CRDS_VARS}, **user}


def _snapshot() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in CRDS_VARS}


def refresh_crds(*, force: bool = False) -> bool:
    """Make an already-imported crds follow the current CRDS_* environment.

    Clears crds's cached configuration and context, and re-reads the server
    URL, when the environment changed since the last refresh (or `force`).
    Returns whether it did. Cheap when nothing changed.
    """
    global _applied
    with _lock:
        now = _snapshot()
        if not force and now == _applied:
            return False
        import crds
        from crds.core import utils

        crds.client.api.set_crds_server(now["CRDS_SERVER_URL"] or _CRDS_DEFAULT_URL)
        utils.clear_function_caches()
        _applied = now
        return True


def resolve_context(env: Mapping[str, str] | None = None, *, quiet: bool = False) -> str:
    """The .pmap crds will use under `env` (default: this process's environment).

    CRDS_CONTEXT when set (symbolic names such as "jwst-latest" translated by
    crds); otherwise what crds picks by default. For JWST that is the build
    context of the installed jwst, asked of the server; offline that question
    fails and crds falls back to the cache's operational context.

    With an explicit `env` the CRDS variables are swapped in for the duration
    of the call; do not run pipelines in other threads of this process
    meanwhile. ``quiet``: crds's own log lines are left out (its FATAL about
    a default cache nobody configured says less than the caller will).
    """
    with _lock:
        if env is None:
            return _context_from_crds(quiet)
        try:
            # An empty value means "not set", as crds reads it.
            with environ({key: env.get(key) or None for key in CRDS_VARS}):
                return _context_from_crds(quiet)
        finally:
            refresh_crds()


def _context_from_crds(quiet: bool) -> str:
    global _applied
    refresh_crds()
    import crds

    # crds's logger, once crds is imported (its import sets the level).
    crds_log = logging.getLogger("CRDS")
    level = crds_log.level
    if quiet:
        crds_log.setLevel(logging.CRITICAL)
    try:
        return str(crds.get_context_name(OBSERVATORY))
    except SystemExit:
        # crds's "(FATAL)" ends the whole process (exit status 255) when its
        # server does not answer and the cache has no configuration: a cache not
        # mounted yet, or none configured at all. Whether to wait or to stop is
        # the caller's decision, not crds's.
        _applied = None  # the next call makes crds forget what it cached meanwhile
        raise CrdsCacheUnreachable(
            f"CRDS could load its configuration neither from its server "
            f"({os.environ.get('CRDS_SERVER_URL') or _CRDS_DEFAULT_URL}) nor from the cache "
            f"CRDS_PATH={os.environ.get('CRDS_PATH') or '(unset)'}") from None
    finally:
        crds_log.setLevel(level)


def serverless(environ: Mapping[str, str] | None = None) -> bool:
    """Whether crds works from its cache alone here: nothing it lacks can be fetched."""
    environ = os.environ if environ is None else environ
    url = environ.get("CRDS_SERVER_URL") or _CRDS_DEFAULT_URL
    return environ.get("CRDS_MODE") == "local" or "serverless" in url


def unavailable_context(context: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why the pipeline mapping ``context`` (``jwst_0002.pmap``) cannot be used
    here, or None. Only a server-less crds knows before a run: its cache
    either has the mapping or never will by itself (with a server, crds
    downloads what the cache lacks, and a server down is for a run to wait
    out). ``context`` must already be a context's name (a plain file name)."""
    environ = os.environ if environ is None else environ
    if not serverless(environ) or not environ.get("CRDS_PATH"):
        return None
    mappings = Path(environ.get("CRDS_MAPPATH") or Path(environ["CRDS_PATH"]) / "mappings")
    if (mappings / OBSERVATORY / context).is_file():
        return None
    have = sorted(p.name for p in (mappings / OBSERVATORY).glob(f"{OBSERVATORY}_*.pmap"))
    return (f"CRDS context {context} is not in the CRDS cache {environ['CRDS_PATH']}, and CRDS "
            f"is server-less here (sync it: crds sync --contexts {context}); the cache has "
            f"{', '.join(have[-5:]) or 'no context'}")
