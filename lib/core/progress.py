"""How long work reports progress and learns it was cancelled, shared by every layer."""

from __future__ import annotations

from collections.abc import Callable

# progress(done, total, message): called by long work; a job writes it where the pages read it
Progress = Callable[[int, int, str], None]


class Cancelled(BaseException):
    """Raised by SIGTERM in a job. A BaseException, like KeyboardInterrupt, so that library code's
    ``except Exception`` handlers cannot swallow or re-wrap it."""
