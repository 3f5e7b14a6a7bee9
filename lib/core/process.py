"""Whether a recorded process id still names a live process (job records, training runs)."""

from __future__ import annotations

import os


def pid_alive(pid) -> bool:
    """True while ``pid`` runs; False for none, a finished process, or a zombie (finished, not yet reaped)."""
    if not pid:
        return False
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:   # alive, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):   # no /proc (macOS): kill(0) said it exists
        return True
