"""A throwaway PostgreSQL cluster for the test session: Debian's PostgreSQL binaries, ``initdb`` into a fresh
directory, ``pg_ctl start`` on a free loopback port (socket directory inside the data directory), trust
authentication for the user ``devicevault``; one empty database per test (:meth:`PostgresCluster.new_database`).

PostgreSQL refuses to run as root: when the tests run as root (the CI machine), the cluster runs as the
``postgres`` user of Debian's package (else ``nobody``), in a directory under the system's temporary
directory that user owns (pytest's own temporary directory is private to root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from cli.services import free_port, port_open

USER = "devicevault"


def bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user the cluster runs as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = bin_dir()
        if self.bin is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
        self.user = _run_as()
        self.directory = Path(tempfile.mkdtemp(prefix="devicevault-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        options = {}
        if self.user is not None:
            options = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
               "HOME": str(self.directory)}
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.directory, env=env,
                              capture_output=True, text=True, timeout=120, **options)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return proc

    def start(self) -> "PostgresCluster":
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-locale",
                  "--no-sync")
        # fsync off and small buffers: a throwaway cluster for tests, started once per session
        options = (f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "postgres.log"),
                  "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not listen on 127.0.0.1:{self.port}; see {self.directory}/postgres.log")
            time.sleep(0.05)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        name = f"dv_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (RuntimeError, OSError):
            pass
        shutil.rmtree(self.directory, ignore_errors=True)
