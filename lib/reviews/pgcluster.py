"""A throwaway local PostgreSQL cluster: for the tests, the benchmark and trying the team set-up.

Uses Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` under ``/usr/lib/postgresql/<v>/bin``).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user. It listens
on 127.0.0.1 at a free port with ``trust`` authentication and lives in a temporary folder that
:meth:`ThrowawayPostgres.destroy` removes.

    with ThrowawayPostgres() as pg:
        url = pg.create_database("reviews")
        owner_url, app_url = pg.team_database()   # the owner/app role split of a team server
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise PostgresMissing("PostgreSQL is not installed: `./setup.sh --test` installs Debian's postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """A PostgreSQL server in a temporary folder (see the module docstring).

    ``durable=False`` (the tests) turns off fsync: much faster, and a crash loses only throwaway data.
    """

    def __init__(self, *, durable: bool = False):
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="relevance-atlas-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.durable = durable
        self._as = {}
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._pg(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions"])
        self.running = False

    def _pg(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        exe = str(self.bin / cmd[0])
        res = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, cwd=self.root, **self._as)
        if check and res.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.strip()}\n{log}")
        return res

    def start(self) -> "ThrowawayPostgres":
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}", "-c max_connections=200"]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._pg(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", " ".join(opts),
                  "start"])
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (``fast`` ends open sessions, as a service restart does)."""
        if self.running:
            self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])
            self.running = False

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)

    def create_database(self, name: str | None = None, owner: str = "postgres") -> str:
        """A new empty database owned by ``owner``; returns its SQLAlchemy URL (as the owner)."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        self._admin(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner)

    def create_role(self, name: str) -> None:
        """An ordinary login role (no superuser, no CREATEROLE), unless it exists."""
        self._admin(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN "
                    f'CREATE ROLE "{name}" LOGIN; END IF; END $$')

    def team_database(self, name: str | None = None, owner: str = "atlas_owner",
                      app: str = "atlas_app") -> tuple[str, str]:
        """A database set up as on a team server: ``owner`` holds the schema, ``app`` only uses it.

        Returns ``(owner_url, app_url)``; see :mod:`lib.reviews.pgsetup`.
        """
        from lib.reviews.pgsetup import setup_postgres

        self.create_role(owner)
        self.create_role(app)
        owner_url = self.create_database(name, owner=owner)
        setup_postgres(owner_url, app)
        return owner_url, owner_url.replace(f"//{owner}@", f"//{app}@", 1)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()
