"""A production install: the wheel carries one package, ``enrollments_phase1``, with the
revisions and an Alembic configuration, so that a deploy runs from any directory with no
checkout (docs/commands.md, "Installing")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import HEAD, ROOT, VENV_BIN, libpq_url


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools builds in the source's build/, which two test workers
    # building at once would share.
    source = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".pgdata", "out"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed on its own (its dependencies are the test environment's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        capture_output=True,
    )
    return target


def installed(site: Path, database_url, command: list[str], cwd: Path, **env: str):
    """A command run as on a production host: from ``cwd`` (no checkout), the installed
    package first on the path."""
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    environ.update(PYTHONPATH=str(site), **env)
    if database_url is not None:
        environ["DATABASE_URL"] = libpq_url(database_url)
    exe = command[0] if command[0] == sys.executable else str(VENV_BIN / command[0])
    return subprocess.run(
        [exe, *command[1:]], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_holds_one_package_with_its_revisions_and_configuration(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "enrollments_phase1",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    for needed in (
        "enrollments_phase1/alembic.ini",
        "enrollments_phase1/migrations/env.py",
        "enrollments_phase1/migrations/script.py.mako",
        "enrollments_phase1/migrations/versions/0001_legacy_schema.py",
        "enrollments_phase1/migrations/shared/v4/gate.py",
        "enrollments_phase1/migrations/pinned/CHANGES.md",
    ):
        assert needed in names, needed
    # Every module of app/ and migrations/ (pyproject.toml lists the packages by hand).
    layout = {"app": "enrollments_phase1", "migrations": "enrollments_phase1/migrations"}
    for top, installed_as in layout.items():
        for path in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{installed_as}/{path.relative_to(ROOT / top).as_posix()}" in names, path
    config = zipfile.ZipFile(wheel).read("enrollments_phase1/alembic.ini").decode()
    assert config == (ROOT / "alembic.ini").read_text()  # the content, not a link


def test_the_installed_package_deploys_from_any_directory(site, database_url, engine, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = installed(
        site, None, [sys.executable, "-m", "enrollments_phase1.alembic_ini"], elsewhere
    )
    assert where.returncode == 0, where.stderr
    config = where.stdout.strip()
    assert Path(config) == site / "enrollments_phase1" / "alembic.ini"

    # Without ALEMBIC_CONFIG (or -c), Alembic finds no configuration there: its own message,
    # as docs/commands.md quotes it.
    lost = installed(site, database_url, ["alembic", "current"], elsewhere)
    assert lost.returncode != 0
    assert "FAILED: No 'script_location' key found in configuration." in lost.stdout + lost.stderr

    upgraded = installed(
        site, database_url, ["alembic", "upgrade", "head"], elsewhere, ALEMBIC_CONFIG=config
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    current = installed(site, database_url, ["alembic", "-c", config, "current"], elsewhere)
    assert current.stdout.strip() == f"{HEAD} (head)", current.stderr
    audit = installed(site, database_url, ["enrollments", "audit", "--json"], elsewhere)
    assert audit.returncode == 0, audit.stderr  # an empty database: nothing to cover
    imported = installed(
        site,
        None,
        [sys.executable, "-c", "import enrollments_phase1; print(enrollments_phase1.__file__)"],
        elsewhere,
    )
    assert imported.stdout.strip().startswith(str(site))  # not this checkout


@pytest.mark.embedded
def test_the_demo_runs_from_an_install_anywhere(site, tmp_path):
    result = installed(site, None, ["enrollments", "demo"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every step behaved as expected" in result.stdout
