"""Whether a process recorded in a state file (a training run, a job) still runs."""

from __future__ import annotations

import os


def pid_alive(pid) -> bool:
    """True while process ``pid`` runs; a zombie child of this process (finished, not yet reaped) counts as dead."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
