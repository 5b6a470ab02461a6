"""The coverage gate (0005) online, its override, its reuse, and the enrollments lock."""

import re
import shutil
import subprocess

from sqlalchemy import text

from enrollments_phase1 import lock
from tests.helpers import (
    HEAD,
    ROOT,
    VENV_BIN,
    Background,
    alembic,
    at_0004_with_a_gap,
    enrollments_rows,
    load_story,
    record_size,
    url_string,
)

RUNBOOK = ROOT / "docs" / "runbook.md"


def current(database_url) -> str:
    return alembic(database_url, "current").stdout.strip()


def test_gate_aborts_below_full_coverage_and_applies_nothing(database_url, engine):
    before = at_0004_with_a_gap(database_url, engine)

    result = alembic(database_url, "upgrade", "head")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert (
        "FAILED: coverage gate before revision 0005: coverage 85.71%: 6 of 7 eligible (student,"
        " course) pairs have an active enrollment; 1 missing, 0 inactive; nothing of revision"
        " 0005 was applied" in out
    )
    assert (
        "first uncovered pairs: (student 1 Ada Lovelace <ada@north.example>, course 2 Physics,"
        " missing, 1 group(s))" in out
    )
    assert "To fix: run enrollments backfill --commit, then alembic upgrade head again." in out
    quoted = re.search(  # the runbook quotes it whole
        r"## 3\. When the gate fails.*?```\n(FAILED: .*?)```", RUNBOOK.read_text(), re.S
    )
    assert quoted and quoted.group(1) in out
    assert current(database_url) == "0004"
    assert enrollments_rows(engine) == before


def test_gate_passes_after_the_fix_it_names(database_url, engine):
    at_0004_with_a_gap(database_url, engine)
    fix = subprocess.run(
        [str(VENV_BIN / "enrollments"), "backfill", "--commit", "--unrecorded"],
        env={"DATABASE_URL": url_string(database_url), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert fix.returncode == 0, fix.stderr
    result = alembic(database_url, "upgrade", "head")
    assert result.returncode == 0, result.stdout + result.stderr
    assert current(database_url) == f"{HEAD} (head)"


def test_anomalies_alone_do_not_block_but_warn(database_url, engine):
    assert alembic(database_url, "upgrade", "0001").returncode == 0
    load_story(engine)  # a teacher, an admin and a cross-school member in groups
    result = alembic(database_url, "upgrade", "head")
    assert result.returncode == 0, result.stdout
    assert (
        "coverage gate: 2 non_student and 1 cross_school pairs (anomalies) are not enrolled"
        in result.stderr
    )
    assert current(database_url) == f"{HEAD} (head)"


def test_override_lets_the_upgrade_through_loudly(database_url, engine):
    at_0004_with_a_gap(database_url, engine)
    result = alembic(database_url, "-x", "coverage_gate=warn", "upgrade", "head")
    assert result.returncode == 0, result.stdout
    assert "COVERAGE GATE OVERRIDDEN (-x coverage_gate=warn) before revision 0005" in result.stderr
    assert "1 missing, 0 inactive; OVERRIDDEN by -x coverage_gate=warn: the upgrade goes on" in (
        result.stderr
    )
    assert "was applied" not in result.stderr
    assert current(database_url) == f"{HEAD} (head)"


def test_a_later_revision_requires_coverage_with_one_line(tmp_path, database_url, engine):
    scripts = tmp_path / "migrations"
    shutil.copytree(
        ROOT / "migrations",
        scripts,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (scripts / "versions" / "0099_phase2_example.py").write_text(
        f'"""a later phase\n\nRevision ID: 0099\nRevises: {HEAD}\n"""\n'
        "from enrollments_phase1.migrations.shared.v4.gate import require_full_coverage\n\n"
        f'revision = "0099"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        "    require_full_coverage(revision)\n"
        '    raise AssertionError("must not get here")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        (ROOT / "alembic.ini")
        .read_text()
        .replace("script_location = enrollments_phase1.migrations:", f"script_location = {scripts}")
    )
    at_0004_with_a_gap(database_url, engine)
    forced = alembic(database_url, "-c", str(ini), "-x", "coverage_gate=warn", "upgrade", HEAD)
    assert forced.returncode == 0, forced.stdout + forced.stderr

    result = alembic(database_url, "-c", str(ini), "upgrade", "head")

    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and failed[0].startswith("FAILED: coverage gate before revision 0099")
    assert "must not get here" not in result.stdout + result.stderr
    assert alembic(database_url, "-c", str(ini), "current").stdout.strip() == HEAD


def test_two_concurrent_upgrades_one_applies_the_other_waits(database_url, engine):
    assert alembic(database_url, "upgrade", "0001").returncode == 0
    load_story(engine)
    with engine.connect() as holder:
        # Hold the enrollments lock (in an open transaction, as a run's lock session does)
        # so that both upgrades start and queue behind it; each says so (naming the
        # holder) once it has tried the lock.
        holder.execute(text(lock.TRY_SQL))
        procs = [Background(["alembic", "upgrade", "head"], database_url) for _ in range(2)]
        for proc in procs:
            line = proc.wait_for("waiting for the enrollments lock")
            assert "held by pid" in line
        holder.rollback()
        results = [proc.finish() for proc in procs]

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    applied = [r for r in results if "Running upgrade 0003 -> 0004" in r.stderr]
    assert len(applied) == 1
    assert current(database_url) == f"{HEAD} (head)"
    assert record_size(engine) == 5
