"""A real PgBouncer in front of the test server, in transaction, session and statement mode.

PgBouncer (Debian's package ``pgbouncer``; ``.ci/run`` installs it) refuses to run as root,
so as root it runs as ``nobody``. The embedded server listens only on a Unix socket in a
directory only its owner may enter: PgBouncer reaches it through a small TCP forwarder run
by the tests. Started once per test session; a test skips, saying why, only where the
binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

BINARY_NAMES = ("pgbouncer", "/usr/sbin/pgbouncer")


def pgbouncer_binary() -> str | None:
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Forwarder(threading.Thread):
    """127.0.0.1:port -> a Unix socket, both ways, for every connection."""

    def __init__(self, unix_path: str) -> None:
        super().__init__(daemon=True, name="pgbouncer-forwarder")
        self.unix_path = unix_path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.listener.close()


@dataclass
class Pooler:
    """One PgBouncer process in ``mode`` (transaction, session or statement)."""

    mode: str
    port: int
    process: subprocess.Popen
    directory: Path

    def url(self, database_url: URL) -> URL:
        """``database_url``'s database, through this pooler."""
        return URL.create(
            "postgresql+psycopg2",
            username=database_url.username or "postgres",
            host="127.0.0.1",
            port=self.port,
            database=database_url.database,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(
    binary: str,
    mode: str,
    upstream_host: str,
    upstream_port: int,
    users: list[str],
    pool_size: int = 4,
    extra: str = "",
) -> Pooler:
    directory = Path(tempfile.mkdtemp(prefix=f"pgbouncer-{mode}-"))
    port = free_port()
    (directory / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={upstream_host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 200
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits,options
logfile = {directory}/pgbouncer.log
{extra}"""
    )
    os.chmod(directory, 0o777)
    for path in directory.iterdir():
        os.chmod(path, 0o666)
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                said = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"PgBouncer did not start: {said}") from None
            time.sleep(0.05)
    return Pooler(mode, port, process, directory)


class Poolers:
    """Both poolers in front of a server, and the forwarder they may need."""

    def __init__(self, admin_url: URL, binary: str) -> None:
        host = admin_url.query.get("host") or admin_url.host or "127.0.0.1"
        port = admin_url.port or 5432
        self.forwarder = None
        if host.startswith("/"):  # a Unix socket: forward TCP to it
            self.forwarder = Forwarder(f"{host}/.s.PGSQL.{port}")
            self.forwarder.start()
            host, port = "127.0.0.1", self.forwarder.port
        users = [admin_url.username or "postgres"]
        self.upstream = (binary, host, port, users)
        self.transaction = start(binary, "transaction", host, port, users)
        self.session = start(binary, "session", host, port, users)
        self.statement = start(binary, "statement", host, port, users)
        self.others: dict[tuple[int, str], Pooler] = {}

    def transaction_pool(self, size: int, extra: str = "") -> Pooler:
        """A transaction pooler with a pool of ``size`` server connections per database and
        user (and ``extra`` settings), started on first use."""
        key = (size, extra)
        if key not in self.others:
            binary, host, port, users = self.upstream
            self.others[key] = start(binary, "transaction", host, port, users, size, extra)
        return self.others[key]

    def stop(self) -> None:
        for pooler in (self.transaction, self.session, self.statement, *self.others.values()):
            pooler.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
