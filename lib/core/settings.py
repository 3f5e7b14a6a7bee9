"""The server's own settings: what no workspace file, account database or browser can change.

Read from a TOML file, ``$RELEVANCE_ATLAS_CONFIG`` or else ``<repo>/server.toml`` (not in git), and the
environment, which wins::

    accounts = "required"            # or "off"        $RELEVANCE_ATLAS_ACCOUNTS
    workspace_roots = ["/data/labs"] # folders         $RELEVANCE_ATLAS_WORKSPACE_ROOTS (os.pathsep-separated)

``accounts = "required"`` is what makes a team server ask for a sign-in. It is a setting, not a property
of the account database: a missing, emptied or replaced database then locks everyone out (fail closed)
instead of opening the dashboard. ``python -m lib users add`` (and every other ``users`` command that
changes an account) writes it. With ``accounts`` unset, a server asks for a sign-in while its account
database holds any account, active or not (see :mod:`lib.reviews.signin`); ``accounts = "off"`` written out keeps
the dashboard open whatever the database holds.

``workspace_roots`` are the folders the dashboard may open workspaces in; the default workspace's parent
folder is always one of them.

``review_databases = ["postgresql://lab@db.internal/reviews"]`` lists the review databases a workspace's
``reviews_db`` may name; any other (except a SQLite file inside that workspace) is refused, so a
workspace.json cannot make the server connect to a host of its choosing.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lib.core import atomic

CONFIG_ENV = "RELEVANCE_ATLAS_CONFIG"
ACCOUNTS_ENV = "RELEVANCE_ATLAS_ACCOUNTS"
ROOTS_ENV = "RELEVANCE_ATLAS_WORKSPACE_ROOTS"
REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_MODES = ("off", "required")


class SettingsError(ValueError):
    """The server's settings file cannot be read (the message names the file and the problem)."""


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "server.toml").expanduser()


@dataclass(frozen=True)
class ServerSettings:
    accounts: str = "off"
    # whether the file or the environment names ``accounts`` (unset: decided by the account database)
    accounts_set: bool = False
    workspace_roots: tuple[Path, ...] = field(default_factory=tuple)
    review_databases: tuple[str, ...] = field(default_factory=tuple)
    source: Path | None = None

    @property
    def accounts_required(self) -> bool:
        return self.accounts == "required"


def _read_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None


def load() -> ServerSettings:
    """The settings now in force (read on every call: the file is tiny and may be changed by the CLI)."""
    path = config_path()
    raw = _read_file(path)
    named = os.environ.get(ACCOUNTS_ENV) or raw.get("accounts")
    accounts = str(named or "off").strip().lower()
    if accounts not in ACCOUNT_MODES:
        raise SettingsError(f"{path}: accounts = {accounts!r}; use one of {', '.join(ACCOUNT_MODES)}")
    env_roots = os.environ.get(ROOTS_ENV)
    roots = env_roots.split(os.pathsep) if env_roots else raw.get("workspace_roots", [])
    if isinstance(roots, str) or not all(isinstance(r, str) for r in roots):
        raise SettingsError(f"{path}: workspace_roots must be a list of folder names")
    databases = raw.get("review_databases", [])
    if isinstance(databases, str) or not all(isinstance(d, str) for d in databases):
        raise SettingsError(f"{path}: review_databases must be a list of database URLs")
    return ServerSettings(accounts=accounts, accounts_set=bool(named),
                          workspace_roots=tuple(Path(r).expanduser().resolve() for r in roots if r.strip()),
                          review_databases=tuple(d for d in databases if d.strip()),
                          source=path if path.exists() else None)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def update(**changes) -> Path:
    """Set top-level keys in the settings file (atomically), keeping the others."""
    path = config_path()
    raw = _read_file(path)
    raw.update({k: (list(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in changes.items()})
    lines = ["# relevance-atlas server settings (see lib/settings.py)"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path
