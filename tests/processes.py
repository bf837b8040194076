"""Whether a process the tests started is still running, from /proc."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """True while ``pid`` runs: a zombie (dead, not yet reaped by its parent)
    counts as gone, which ``os.kill(pid, 0)`` would not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state letter follows the command name, which may hold ")".
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
