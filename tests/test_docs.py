"""The docs say what the project does: options, revisions, and commands that run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from enrollments_phase1.cli import build_parser
from enrollments_phase1.revision_list import render
from tests.helpers import HEAD, ROOT, VENV_BIN, libpq_url, load_story, upgrade

DOCS = ROOT / "docs"


def cli_options() -> dict[str, set[str]]:
    parser = build_parser()
    options = {"enrollments": {o for a in parser._actions for o in a.option_strings}}
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        options[name] = {o for a in command._actions for o in a.option_strings}
    return options


def test_every_option_is_documented():
    commands = (DOCS / "commands.md").read_text()
    missing = [
        f"{command} {option}"
        for command, options in cli_options().items()
        for option in options
        if option not in ("-h", "--help") and f"`{option}" not in commands
    ]
    assert missing == []
    for command in cli_options():
        if command != "enrollments":
            assert f"## `enrollments {command}`" in commands


def test_every_synopsis_names_every_option():
    """Each command's synopsis (the first code block of its section) names each of its
    options but -h and -v (1.2.0's backfill synopsis lacked --lock-patience and
    --unrecorded)."""
    commands = (DOCS / "commands.md").read_text()
    for command, options in cli_options().items():
        if command == "enrollments":
            continue
        section = _section(commands, f"## `enrollments {command}`")
        synopsis = re.search(r"```\n(enrollments .*?)```", section, re.S)
        assert synopsis, command
        named = set(re.findall(r"--[a-z-]+", synopsis.group(1)))
        wanted = {o for o in options if o.startswith("--") and o not in ("--help", "--verbose")}
        assert wanted - named == set(), command


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _row(section: str, first_cell: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, first_cell
    return rows[0]


def test_every_setting_is_documented_with_its_default():
    """docs/commands.md gives each setting's default as enrollments.settings defines it:
    under ``-x`` for Alembic, and for each command that takes it."""
    from enrollments_phase1.settings import SETTINGS

    commands = (DOCS / "commands.md").read_text()
    alembic_section = _section(commands, "## `alembic`")
    for setting in SETTINGS.values():
        if setting.x:
            row = _row(alembic_section, f"`{setting.name}`")
            default = setting.default_for(None)
            assert default is None or f"`{default}`" in row.split("|")[2], row
        for command in setting.commands:
            section = _section(commands, f"## `enrollments {command}`")
            row = next(
                line
                for line in section.splitlines()
                if line.startswith(f"| `{setting.flag}") and line[3 + len(setting.flag)] in " `"
            )
            default = setting.default_for(command)
            if default is not None and setting.metavar != "yes|no":
                assert f"`{default}`" in row.split("|")[2], row


def test_migrations_doc_is_current():
    assert (DOCS / "migrations.md").read_text() == render(), (
        "docs/migrations.md is stale: "
        "python -m enrollments_phase1.revision_list > docs/migrations.md"
    )


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## The deploy")]
    assert "<!-- main-command -->" in head and "<!-- test-command -->" in head
    assert "enrollments demo" in head and "pytest" in head
    for link in re.findall(r"\]\((docs/[^)]+)\)", readme):
        path, _, anchor = link.partition("#")
        assert (ROOT / path).exists(), link
        assert not anchor or anchor in anchors(ROOT / path), link


def runnable_commands(doc: Path) -> list[tuple[str, int]]:
    """(command, expected exit) for each line of the ```sh blocks marked <!-- run -->."""
    commands = []
    for block in re.findall(r"<!-- run -->\n```sh\n(.*?)```", doc.read_text(), re.S):
        for line in block.strip().splitlines():
            command, _, comment = line.partition("#")
            match = re.search(r"exit (\d+)", comment)
            commands.append((command.strip(), int(match.group(1)) if match else 0))
    return commands


def run_doc(doc: Path, pg_server, database_url, engine, tmp_path) -> list[str]:
    upgrade(engine, "0001")
    load_story(engine)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=libpq_url(database_url),
        ALEMBIC_CONFIG=str(ROOT / "alembic.ini"),
        PATH=f"{VENV_BIN}:{pg_server.bin_dir}:{env.get('PATH', '')}",
    )
    ran = []
    commands = runnable_commands(doc)
    assert commands
    for command, expected in commands:
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == expected, f"{command}\n{proc.stdout}\n{proc.stderr}"
        ran.append(command)
    return ran


def test_runbook_commands_run_as_written(pg_server, database_url, engine, tmp_path):
    ran = run_doc(DOCS / "runbook.md", pg_server, database_url, engine, tmp_path)
    assert "alembic upgrade head" in ran


def test_dba_review_commands_run_as_written(pg_server, database_url, engine, tmp_path):
    ran = run_doc(DOCS / "dba-review.md", pg_server, database_url, engine, tmp_path)
    assert any(c.startswith("psql") for c in ran)
    current = subprocess.run(
        [str(VENV_BIN / "alembic"), "-c", str(ROOT / "alembic.ini"), "current"],
        env={**os.environ, "DATABASE_URL": libpq_url(database_url)},
        capture_output=True,
        text=True,
    )
    assert current.stdout.strip() == f"{HEAD} (head)"


@pytest.mark.parametrize("doc", ["README.md", "docs/runbook.md", "docs/dba-review.md"])
def test_docs_name_only_real_options(doc):
    text = (ROOT / doc).read_text()
    known = set().union(*cli_options().values())
    for option in re.findall(r"enrollments (?:audit|backfill)[^`\n,;)]*", text):
        for flag in re.findall(r"--[a-z-]+", option):
            assert flag in known, f"{doc}: {flag}"


def anchors(doc: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", doc.read_text(), re.M)
    }


def test_no_link_points_outside_the_repository():
    """A user's clone has only the repository: every link resolves inside it."""
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        assert "http://" not in text and "https://" not in text, doc.name
        for target, anchor in re.findall(r"\]\(([^)#]+)(?:#([^)]*))?\)", text):
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: {target}"
            assert not anchor or anchor in anchors(path), f"{doc.name}: {target}#{anchor}"


def sql_blocks(doc: Path) -> dict[str, str]:
    """The ```sql blocks marked <!-- run-sql ROLE -->, by the role that runs them."""
    return dict(re.findall(r"<!-- run-sql (\S+) -->\n```sql\n(.*?)```", doc.read_text(), re.S))


LAYOUT = ("school_owner", "school_app", "school_reader")


def test_role_layout_runs_as_written(pg_server, database_url, engine):
    import psycopg2

    from tests.helpers import alembic, enrollments, psql

    blocks = sql_blocks(DOCS / "dba-review.md")
    assert set(blocks) == {"admin", "school_owner", "school_owner-after-deploy"}
    # The legacy tables' grants run whenever those exist: they name no table of ours.
    assert "alembic_version" not in blocks["school_owner"]
    as_role = {role: database_url.set(username=role, password=None) for role in LAYOUT}
    admin = psycopg2.connect(libpq_url(database_url.set(database="postgres")))
    admin.autocommit = True
    for role in LAYOUT:
        admin.cursor().execute(f"DROP ROLE IF EXISTS {role}")  # a run cut short left them
    try:
        ran = psql(pg_server, database_url, blocks["admin"])
        assert ran.returncode == 0, ran.stderr
        owner = as_role["school_owner"]
        assert alembic(owner, "upgrade", "0001").returncode == 0
        from sqlalchemy import create_engine

        load_story(create_engine(owner))
        ran = psql(pg_server, owner, blocks["school_owner"])  # before the deploy
        assert ran.returncode == 0, ran.stderr
        deployed = alembic(owner, "upgrade", "head")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        ran = psql(pg_server, owner, blocks["school_owner-after-deploy"])
        assert ran.returncode == 0, ran.stderr

        app = psycopg2.connect(libpq_url(as_role["school_app"]))
        cur = app.cursor()  # a membership the application writes is enrolled at commit
        cur.execute("INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 3, 7)")
        app.commit()
        for forbidden in (
            "SELECT 1 FROM course_enrollments",
            "SELECT 1 FROM enrollment_backfill_changes",
            "SELECT 1 FROM course_enrollments_sync_pending",
            "SELECT public.course_enrollments_sync_members()",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(forbidden)
            app.rollback()
        app.close()
        with engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT active FROM course_enrollments WHERE course_id = 2 AND student_id = 7"
            ).scalar()
        reader = enrollments(as_role["school_reader"], "audit", "--json")
        assert reader.returncode == 1, reader.stderr  # full coverage, the story's anomalies
        assert '"security_warnings": []' in reader.stdout
        read_only = psycopg2.connect(libpq_url(as_role["school_reader"]))
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            read_only.cursor().execute("UPDATE users SET name = 'x'")
        read_only.close()
    finally:
        with engine.connect() as conn:  # hand everything back, then drop the roles
            conn.exec_driver_sql(f"REASSIGN OWNED BY {', '.join(LAYOUT)} TO CURRENT_USER")
            conn.exec_driver_sql(f"DROP OWNED BY {', '.join(LAYOUT)}")
            conn.commit()
        for role in LAYOUT:
            admin.cursor().execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_the_readme_deploy_runs_as_written_and_is_undone(pg_server, database_url, engine, tmp_path):
    """The README's deploy block, line by line on a legacy database (the test's own
    DATABASE_URL for the placeholder; every other export as written, from a directory
    that holds no alembic.ini), then alembic downgrade 0003: course_enrollments is exactly
    as before."""
    from tests.helpers import enrollments_rows

    block = re.search(r"<!-- deploy -->\n```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block
    upgrade(engine, "0001")
    load_story(engine)
    with engine.connect() as conn:  # a legacy database as production has it: never stamped
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.commit()
    before = enrollments_rows(engine)
    env = dict(os.environ)
    env.pop("ALEMBIC_CONFIG", None)
    env.update(DATABASE_URL=libpq_url(database_url))
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    ran = []
    for line in block.group(1).strip().splitlines():
        command = line.partition("#")[0].strip()
        if command.startswith("export DATABASE_URL="):
            continue
        if command.startswith("export "):
            name = command.removeprefix("export ").partition("=")[0]
            value = subprocess.run(
                ["bash", "-c", f'{command}; printf %s "${name}"'],
                cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            env[name] = value
            continue
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        expected = {"enrollments audit": (1, 2)}.get(command, (0,))
        assert proc.returncode in expected, f"{command}\n{proc.stdout}\n{proc.stderr}"
        ran.append(command)
    assert "enrollments backfill --commit" in ran
    assert enrollments_rows(engine) != before

    undo = subprocess.run(
        ["bash", "-c", "alembic downgrade 0003"], cwd=tmp_path, env=env, capture_output=True,
        text=True,
    )  # fmt: skip

    assert undo.returncode == 0, undo.stderr
    assert enrollments_rows(engine) == before
