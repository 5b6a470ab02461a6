"""docs/benchmarks.md from the measured results: every figure beside its goal.

The results of each server are kept as JSON in ``docs/benchmarks/`` (one file per
server), so the page shows every server measured, and can be written again from them:

    python -m bench.report
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks"
PAGE = ROOT / "docs" / "benchmarks.md"

GOALS = {
    "audit": 1.2,
    "one_statement": 1.2,
    "batched": 1.3,
    "upgrade": 1.3,
    "growth": 1.1,
    "wal": 1.5,
    "writer_p99_ms": 10.0,
    "writer_max_ms": 100.0,
    "peak_mb": 150.0,
    "audit_shapes": 1.0,  # issue 21: the audit, the gate and the dry run at most A3
    "fixed_cost": 0.3,
}


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "**MISSED**"


def growth(a: dict, b: dict, step: str, key: str = "seconds") -> float:
    ta, tb = a["steps"][step][key], b["steps"][step][key]
    na, nb = a["counts"]["group_members"], b["counts"]["group_members"]
    return math.log(tb / ta) / math.log(nb / na)


def floor_sum(size: dict) -> float:
    s = size["steps"]
    return (
        s["floor_index"]["seconds"] + s["floor_backfill"]["seconds"] + s["floor_audit"]["seconds"]
    )


def server_section(result: dict) -> list[str]:
    sizes = result["sizes"]
    shape = result.get("shape", {}).get("name", "default")
    out = [f"## {result['server']}, {shape} shape", "", result["machine"], ""]
    if result.get("describe"):
        out += [f"Data: {result['describe']}.", ""]
    out += [
        "| memberships | eligible pairs | audit / A3 | one-statement backfill / B2 | "
        "batched backfill / B2 | `alembic upgrade head` / (index + B2 + A3) |",
        "|---:|---:|---|---|---|---|",
    ]
    for size in sizes:
        s = size["steps"]
        a = s["audit"]["seconds"] / s["floor_audit"]["seconds"]
        one = (s["one_statement"]["inner_seconds"] or s["one_statement"]["seconds"]) / s[
            "floor_backfill"
        ]["seconds"]
        bat = (s["batched"]["inner_seconds"] or s["batched"]["seconds"]) / s["floor_backfill"][
            "seconds"
        ]
        up = s["upgrade"]["seconds"] / floor_sum(size)
        out.append(
            f"| {size['counts']['group_members']:,} | {size['eligible_pairs']:,} | "
            f"{s['audit']['seconds']:.2f} / {s['floor_audit']['seconds']:.2f} s = **{a:.2f}x** "
            f"(goal 1.2x: {verdict(a, GOALS['audit'])}) | "
            f"{s['one_statement']['inner_seconds'] or s['one_statement']['seconds']:.2f} / "
            f"{s['floor_backfill']['seconds']:.2f} s = **{one:.2f}x** "
            f"(goal 1.2x: {verdict(one, GOALS['one_statement'])}) | "
            f"{s['batched']['inner_seconds'] or s['batched']['seconds']:.2f} s = **{bat:.2f}x** "
            f"(goal 1.3x: {verdict(bat, GOALS['batched'])}) | "
            f"{s['upgrade']['seconds']:.2f} / {floor_sum(size):.2f} s = **{up:.2f}x** "
            f"(goal 1.3x: {verdict(up, GOALS['upgrade'])}) |"
        )
    out += ["", "Whole commands, wall seconds (Python's start included), and WAL:", ""]
    out += [
        "| memberships | audit | dry run | `backfill --commit --one-statement` | "
        "`backfill --commit` | `alembic upgrade head` | floors: A3, B2, index | "
        "WAL: upgrade / (B2 + index) |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for size in sizes:
        s = size["steps"]
        wal_floor = s["floor_backfill"]["wal_mb"] + s["floor_index"]["wal_mb"]
        wal = s["upgrade"]["wal_mb"] / wal_floor
        out.append(
            f"| {size['counts']['group_members']:,} | {s['audit']['seconds']:.2f} | "
            f"{s['dry_run']['seconds']:.2f} | {s['one_statement']['seconds']:.2f} | "
            f"{s['batched']['seconds']:.2f} | {s['upgrade']['seconds']:.2f} | "
            f"{s['floor_audit']['seconds']:.2f}, {s['floor_backfill']['seconds']:.2f}, "
            f"{s['floor_index']['seconds']:.2f} | {s['upgrade']['wal_mb']:,.0f} / "
            f"{wal_floor:,.0f} MB = **{wal:.2f}x** (goal 1.5x: {verdict(wal, GOALS['wal'])}) |"
        )
    if all("audit_by_course" in size["steps"] for size in sizes):
        out += ["", "The breakdown's cost (`enrollments audit --by course`, the same pass):", ""]
        out += ["| memberships | audit | audit --by course | added |", "|---:|---:|---:|---:|"]
        for size in sizes:
            s = size["steps"]
            plain, by = s["audit"]["seconds"], s["audit_by_course"]["seconds"]
            out.append(
                f"| {size['counts']['group_members']:,} | {plain:.2f} | {by:.2f} | "
                f"{(by - plain) / plain:+.0%} |"
            )
    out += ["", "Growth exponent between consecutive sizes (goal 1.1 at most):", ""]
    steps = [
        ("audit", "audit", "seconds"),
        ("one-statement backfill", "one_statement", "inner_seconds"),
        ("batched backfill", "batched", "inner_seconds"),
        ("alembic upgrade head", "upgrade", "seconds"),
    ]
    spans = list(itertools.pairwise(sizes))
    out += [
        "| step | "
        + " | ".join(
            f"{a['counts']['group_members']:,} to {b['counts']['group_members']:,}"
            for a, b in spans
        )
        + " |"
    ]
    out += ["|---|" + "---:|" * (len(sizes) - 1)]
    for label, step, key in steps:
        cells = []
        for a, b in spans:
            g = growth(a, b, step, key)
            cells.append(f"{g:.2f} ({verdict(g, GOALS['growth'])})")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "",
        "The application writer during the default `alembic upgrade head` "
        f"({result['writer_rate']:.0f} tx/s, upserting pairs the backfill creates; goals: "
        "p99 10 ms, max 100 ms, 0 errors), and the peak RSS of the commands (goal: under "
        "150 MB):",
        "",
        "| memberships | transactions | p99 ms | max ms | errors |"
        " peak MB (largest of any command) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        w = size["writer"]["upgrade"]
        peak = max(
            size["steps"][k]["peak_mb"]
            for k in ("audit", "dry_run", "one_statement", "batched", "upgrade")
        )
        out.append(
            f"| {size['counts']['group_members']:,} | {w['transactions']:.0f} | "
            f"{w['p99_ms']:.1f} ({verdict(w['p99_ms'], GOALS['writer_p99_ms'])}) | "
            f"{w['max_ms']:.1f} ({verdict(w['max_ms'], GOALS['writer_max_ms'])}) | "
            f"{w['errors']:.0f} ({verdict(w['errors'], 0)}) | "
            f"{peak:.0f} ({verdict(peak, GOALS['peak_mb'])}) |"
        )
    if result.get("trigger"):
        out += ["", *trigger_section(result["trigger"])]
    largest = sizes[-1]
    if largest.get("explain"):
        out += [
            "",
            f"One batch of the backfill at {largest['counts']['group_members']:,} memberships "
            "(revision 0004's statement of the release that measured it: 10,000 from the "
            "middle of the walk, `EXPLAIN (ANALYZE, BUFFERS)`): every table read by index, no "
            "sequential scan.",
            "",
            "```",
            largest["explain"],
            "```",
        ]
    return out


def trigger_section(t: dict) -> list[str]:
    """The sync trigger's cost: one insert, bulk writes beside their floor, the legacy
    writer during the deploy, races, the mixed load (older results: what they measured)."""
    if "many_seconds" not in t:
        return _trigger_section_1_2(t)
    p99_added = t["single_p99_ms"]["with"] - t["single_p99_ms"]["without"]
    out = [
        f"The sync trigger's cost ({t.get('students', 0):,} students, median of 3 copies "
        f"each): one membership insert, p50 {t['single_p50_ms']['without']:.2f} to "
        f"{t['single_p50_ms']['with']:.2f} ms, p99 {t['single_p99_ms']['without']:.2f} to "
        f"{t['single_p99_ms']['with']:.2f} ms: **+{p99_added:.2f} ms** (goal +1 ms: "
        f"{verdict(p99_added, 1.0)}).",
        "",
        "Bulk writes, beside their floor (the same memberships, then the enrollments the "
        "trigger creates for them inserted by hand; goal: at most 1.5x):",
        "",
        "| write | without the trigger | floor | with the trigger | x floor | backend peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    peaks = t.get("peak_mb", {})
    for key, label, rows in (
        ("bulk", "one INSERT ... SELECT", t["bulk_rows"]),
        ("many", "one-row INSERTs, one transaction", t["many_rows"]),
    ):
        s = t[f"{key}_seconds"]
        ratio = s["with"] / s["floor"]
        peak = peaks.get(f"{key}_with")
        shown = f"{peak:,.0f} MB" if peak else "not measured (a remote server)"
        out.append(
            f"| {label}, {rows:,} memberships | {s['without']:.2f} s | {s['floor']:.2f} s | "
            f"{s['with']:.2f} s | **{ratio:.2f}x** ({verdict(ratio, 1.5)}) | {shown} |"
        )
    writer = t.get("deploy_writer")
    if writer:
        d, b = writer["during"], writer["before"]
        out += [
            "",
            f"The legacy application during the deploy: {t['mixed_settings']['legacy_rate']:.0f} "
            "membership inserts a second, before it and while `alembic upgrade head` runs from "
            f"0003 with an empty record ({d['upgrade_seconds']:.1f} s): p50 {b['p50_ms']:.1f} "
            f"to {d['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} to **{d['p99_ms']:.1f} ms** "
            f"(goal 10 ms: {verdict(d['p99_ms'], 10.0)}), max {b['max_ms']:.1f} to "
            f"**{d['max_ms']:.1f} ms** (goal 100 ms: {verdict(d['max_ms'], 100.0)}); "
            f"{d['errors']:.0f} errors in {d['transactions']:,.0f} transactions.",
        ]
        c = writer.get("control")
        if c:
            out += [
                "",
                "The control: the same writes by hand, during the same deploy on another "
                "copy (each membership into a table no trigger watches, and its enrollment, "
                f"in one transaction): p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, "
                f"max {c['max_ms']:.1f} ms. What the deploy's load costs the same commits "
                "without the trigger on this machine; the trigger's part is the difference.",
            ]
    if t.get("races"):
        rounds = t["mixed_settings"].get("rounds", 0)
        out += [
            "",
            f"Races ({rounds:.0f} rounds each, two sessions committing together, constraints "
            "deferred; bench/races.py; goals: no pair uncovered, no deadlock or serialization "
            "failure added):",
            "",
            "| staging | uncovered without / with | deadlocks without / with | "
            "serialization failures without / with |",
            "|---|---:|---:|---:|",
        ]
        for name, r in t["races"].items():
            w, o = r["with"], r["without"]
            added = (w["deadlocks"] - o["deadlocks"]) + (
                0
                if r.get("failures_allowed")
                else max(0, w["serialization_failures"] - o["serialization_failures"])
            )
            out.append(
                f"| {name} | {o['uncovered']} / **{w['uncovered']}** | {o['deadlocks']} / "
                f"**{w['deadlocks']}** | {o['serialization_failures']} / "
                f"**{w['serialization_failures']}**"
                f"{' (allowed: retried)' if r.get('failures_allowed') else ''}"
                f" ({verdict(max(added, w['uncovered']), 0)}) |"
            )
        out.append(
            "",
        )
        out.append(
            "Without the trigger nothing enrolls the pairs, so every staged pair is uncovered; "
            "under REPEATABLE READ a serialization failure is the trigger's answer to a race "
            "where the two sides conflict (the application retries), never a gap."
        )
    return out + _mixed_section(t)


def _trigger_section_1_2(t: dict) -> list[str]:
    """1.2's trigger results: a bulk insert against the time without the trigger."""
    p99_added = t["single_p99_ms"]["with"] - t["single_p99_ms"]["without"]
    bulk = t["bulk_seconds"]["with"] / t["bulk_seconds"]["without"]
    out = [
        f"The sync trigger's cost ({t.get('students', 0):,} students, median of 3 copies "
        f"each): one membership insert, p50 {t['single_p50_ms']['without']:.2f} to "
        f"{t['single_p50_ms']['with']:.2f} ms, p99 {t['single_p99_ms']['without']:.2f} to "
        f"{t['single_p99_ms']['with']:.2f} ms: **+{p99_added:.2f} ms** (goal +1 ms: "
        f"{verdict(p99_added, 1.0)}); a bulk insert of {t['bulk_rows']:,} memberships, "
        f"{t['bulk_seconds']['without']:.2f} to {t['bulk_seconds']['with']:.2f} s: "
        f"**{bulk:.2f}x** (goal 2x: {verdict(bulk, 2.0)}).",
    ]
    if "bulk_floor_seconds" in t:
        floor = t["bulk_floor_seconds"] / t["bulk_seconds"]["without"]
        out[-1] += (
            f" Its floor, the same memberships and then the enrollments the trigger creates "
            f"for them inserted by hand: {t['bulk_floor_seconds']:.2f} s = {floor:.2f}x."
        )
    return out + _mixed_section(t)


def _mixed_section(t: dict) -> list[str]:
    out: list[str] = []
    mixed = t.get("mixed")
    if mixed:
        m = t["mixed_settings"]
        base = mixed["without"]
        out += [
            "",
            f"The mixed load: {m['writers']:.0f} writers on {m['hot']:.0f} hot students for "
            f"{m['seconds']:.0f} s each; each transaction inserts, activates or moves one "
            "membership, then writes the student's enrollments in course_id order (goals: no "
            "deadlock the application does not have without the trigger; p99 within +2 ms):",
            "",
            "| trigger | transactions | deadlocks | errors | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, label in (("without", "none"), ("1.1.0", "1.1.0's"), ("with", "this release's")):
            r = mixed[mode]
            deadlocks, p99 = f"{r['deadlocks']:.0f}", f"{r['p99_ms']:.1f}"
            if mode == "with":
                added = r["deadlocks"] - base["deadlocks"]
                p99_delta = r["p99_ms"] - base["p99_ms"]
                deadlocks += f" ({verdict(added, 0)})"
                p99 += f" (+{p99_delta:.1f}: {verdict(p99_delta, 2.0)})"
            out.append(
                f"| {label} | {r['transactions']:,.0f} | {deadlocks} | {r['errors']:.0f} | "
                f"{r['p50_ms']:.1f} | {p99} | {r['max_ms']:.1f} |"
            )
    return out


def shapes_section(result: dict) -> list[str]:
    """The counting statement per data shape (``python -m bench.shapes``)."""
    goal = GOALS["audit_shapes"]
    fixed = result["fixed"]
    added = fixed["audit"] - fixed["floor_audit"]
    out = [
        f"## The counting statement per data shape: {result['server']}",
        "",
        "Produced by `python -m bench.shapes` (`--shapes`, `--sizes`). " + result["machine"],
        "",
        f"Fixed cost (a database of one student): the audit {fixed['audit']:.2f} s, A3 "
        f"through psql {fixed['floor_audit']:.2f} s: **{added:+.2f} s** (goal at most "
        f"{GOALS['fixed_cost']} s: {verdict(added, GOALS['fixed_cost'])}).",
        "",
        "| shape | memberships | eligible pairs | coverage | A3, A4 | audit | dry run | "
        "gate (its block alone) | audit peak MB |",
        "|---|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for shape in result["shapes"]:
        for size in shape["sizes"]:
            s = size["steps"]
            a3 = s["floor_audit"]["seconds"]
            a4 = s.get("floor_audit_a4", {}).get("seconds")
            floor = min(a3, a4) if a4 else a3
            cells = []
            for step in ("audit", "dry_run", "gate"):
                ratio = s[step]["seconds"] / floor
                cells.append(
                    f"{s[step]['seconds']:.2f} s = **{ratio:.2f}x** ({verdict(ratio, goal)})"
                )
            peak = s["audit"]["peak_mb"]
            out.append(
                f"| {shape['shape']['name']} | {size['memberships']:,} | "
                f"{size['eligible_pairs']:,} | {size['coverage_percent']:.2f}% | {a3:.2f}, "
                f"{a4 or 0:.2f} s | "
                + " | ".join(cells)
                + f" | {peak:.0f} ({verdict(peak, GOALS['peak_mb'])}) |"
            )
    out += [
        "",
        f"Goal: each at most {goal}x the floor, the faster of A3 and A4 (bench/floors.py) on "
        "that database. The shapes:",
        "",
    ]
    out += [f"- {shape['describe']}" for shape in result["shapes"]]
    out += ["", "Growth exponent of the audit between consecutive sizes (goal 1.1 at most):", ""]
    for shape in result["shapes"]:
        cells = []
        for a, b in itertools.pairwise(shape["sizes"]):
            g = math.log(b["steps"]["audit"]["seconds"] / a["steps"]["audit"]["seconds"]) / (
                math.log(b["memberships"] / a["memberships"])
            )
            cells.append(
                f"{a['memberships']:,} to {b['memberships']:,}: {g:.2f} "
                f"({verdict(g, GOALS['growth'])})"
            )
        out.append(f"- {shape['shape']['name']}: " + "; ".join(cells))
    for shape in result["shapes"]:
        largest = shape["sizes"][-1]
        if largest.get("explain"):
            out += [
                "",
                f"The audit's counting statement, {shape['shape']['name']} shape, "
                f"{largest['memberships']:,} memberships (`EXPLAIN (ANALYZE, BUFFERS)`, with "
                "the settings the audit pins for it):",
                "",
                "```",
                largest["explain"],
                "```",
            ]
    return out


def slug(label: str) -> str:
    """A server's label as a file name."""
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def save_separate(kind: str, label: str, machine_line: str, figures: dict) -> Path:
    """The result of a bench run on its own (``python -m bench.trigger``, ``bench.undo``),
    kept in docs/benchmarks/separate/ beside the others."""
    import datetime

    where = RESULTS / "separate"
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{kind}-{slug(label)}.json"
    path.write_text(
        json.dumps(
            {
                "kind": kind,
                "server": label,
                "machine": f"{machine_line} Run on {datetime.date.today().isoformat()}.",
                "figures": figures,
            },
            indent=1,
        )
        + "\n"
    )
    return path


BACKFILL_GOALS = {
    "batched": 1.2,
    "batched_wal": 1.7,
    "upgrade": 1.3,
    "deploy_after_backfill": 1.5,
    "audit": 1.1,
    "fixed_cost": 0.5,
    "longest_batch": 1.0,
}


def _passes(step: dict) -> str:
    """The candidates statement of each pass, as the command logged it."""
    passes = step.get("passes") or []
    if not passes:
        return ""
    each = ", ".join(
        f"pass {p['pass']} {p['pairs']:,} pairs in {p['candidates_seconds']:.1f} s" for p in passes
    )
    return f"; candidates: {each}"


def backfill_section(result: dict) -> list[str]:
    """``python -m bench.backfill``: every figure of issue 27 beside its goal."""
    f = result["figures"]
    g = BACKFILL_GOALS
    out = [
        f"## The backfill at its floor (`python -m bench.backfill`): {result['server']}",
        "",
        result["machine"],
        "",
        "Each writing step on a fresh copy after a `CHECKPOINT`; WAL and full-page images "
        "(FPI, `pg_stat_wal.wal_fpi`) for that step alone. The backfill's time is the "
        "command's own (its JSON `seconds`: the writing, without Python's start or the audit "
        "after); the other steps are whole commands.",
        "",
        "| shape | memberships | eligible pairs | `backfill --commit` / B2: time, WAL, FPI | "
        "`upgrade head` from 0001 / (index + B2 + A3 after B2) | deploy after a backfill "
        "ahead of time / (index + A3 after B2) | backfill at 100% | audit / A3 |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    for shape in f["shapes"]:
        s = shape["steps"]
        b2, index, a3 = s["floor_backfill"], s["floor_index"], s["floor_audit"]["seconds"]
        a3_after = s.get("floor_audit_after", s["floor_audit"])["seconds"]
        batched = s["batched"]["json"]["seconds"]
        time_x = batched / b2["seconds"]
        wal_x = s["batched"]["wal_mb"] / b2["wal_mb"]
        fpi_x = s["batched"]["fpi"] / max(b2["fpi"], 1)
        up_floor = index["seconds"] + b2["seconds"] + a3_after
        up_x = s["upgrade"]["seconds"] / up_floor
        ahead_floor = index["seconds"] + a3_after
        ahead_x = s["deploy_after_backfill"]["seconds"] / ahead_floor
        audit_x = s["audit"]["seconds"] / a3
        out.append(
            f"| {shape['shape']['name']} | {shape['counts']['group_members']:,} | "
            f"{shape['eligible_pairs']:,} | {batched:.1f} / {b2['seconds']:.1f} s = "
            f"**{time_x:.2f}x** ({verdict(time_x, g['batched'])}); "
            f"{s['batched']['wal_mb']:,.0f} / {b2['wal_mb']:,.0f} MB = **{wal_x:.2f}x** "
            f"({verdict(wal_x, g['batched_wal'])}); {s['batched']['fpi']:,} / {b2['fpi']:,} "
            f"= {fpi_x:.2f}x{_passes(s['batched'])} | {s['upgrade']['seconds']:.1f} / "
            f"{up_floor:.1f} s = "
            f"**{up_x:.2f}x** ({verdict(up_x, g['upgrade'])}) | "
            f"{s['deploy_after_backfill']['seconds']:.1f} / {ahead_floor:.1f} s = "
            f"**{ahead_x:.2f}x** ({verdict(ahead_x, g['deploy_after_backfill'])}) | "
            f"{s['backfill_at_100']['seconds']:.1f} s (candidates alone: "
            f"{s['backfill_at_100']['json']['seconds']:.1f} s) | "
            f"{s['audit']['seconds']:.2f} / {a3:.2f} s = **{audit_x:.2f}x** "
            f"({verdict(audit_x, g['audit'])}) |"
        )
    fixed = f["fixed_audit_seconds"]
    out += [
        "",
        f"The audit's fixed cost (a database of one student, Python's start included): "
        f"{fixed:.2f} s (goal {g['fixed_cost']} s: {verdict(fixed, g['fixed_cost'])}).",
        "",
        f"The legacy application during `alembic upgrade head` ({f['rate']:.0f} new "
        "memberships a second, each a commit; goals p99 10 ms, max 100 ms), the longest "
        "write transaction of the backfill (goal 1 s), and the peak RSS of the commands "
        "(goal: under 150 MB):",
        "",
        "| shape | commits | p99 ms | max ms | errors | longest batch s | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in f["shapes"]:
        s = shape["steps"]
        w = s["upgrade"]["writer"]
        longest = s["batched"]["json"]["longest_batch_seconds"]
        peak = max(s[k]["peak_mb"] for k in ("audit", "batched", "upgrade", "backfill_at_100"))
        out.append(
            f"| {shape['shape']['name']} | {w['transactions']:,} | {w['p99_ms']:.1f} "
            f"({verdict(w['p99_ms'], GOALS['writer_p99_ms'])}) | {w['max_ms']:.1f} "
            f"({verdict(w['max_ms'], GOALS['writer_max_ms'])}) | {w['errors']} | "
            f"{longest:.3f} ({verdict(longest, g['longest_batch'])}) | {peak:.0f} "
            f"({verdict(peak, GOALS['peak_mb'])}) |"
        )
    return out


def separate_section(result: dict) -> list[str]:
    f = result["figures"]
    if result["kind"] == "backfill":
        return backfill_section(result)
    if result["kind"] == "steering":
        share = f["share"]
        return [
            f"## The backfill's checks before each batch (`python -m bench.steering`): "
            f"{result['server']}",
            "",
            result["machine"],
            "",
            f"The batched backfill at 0003 over {f['students']:,} students: {f['batches']:,} "
            f"batches in {f['seconds']:.1f} s. Its checks before each batch (the orders of "
            "`enrollment_backfill_control`, the standbys' lag, VACUUM, the xmin horizon, the "
            f"archive) took {f['checks_seconds']:.2f} s in all, {f['per_batch_ms']:.2f} ms a "
            f"batch: **{100 * share:.2f}%** of the run (goal 2%: {verdict(share, 0.02)}).",
        ]
    if result["kind"] == "trigger":
        title = f"The sync trigger alone (`python -m bench.trigger`): {result['server']}"
        return [f"## {title}", "", result["machine"], "", *trigger_section(f)]
    ratio = f["seconds"]["with"] / f["seconds"]["without"]
    longest = max(f["max_batch_seconds"].values())
    kept = ", ".join(f"{n:,} by {t}" for t, n in f["kept"].items()) or "none"
    return [
        f"## The undo alone (`python -m bench.undo`): {result['server']}",
        "",
        result["machine"],
        "",
        f"`alembic downgrade 0003` of {f['records']:,} recorded enrollments "
        f"({f['students']:,} students): {f['seconds']['without']:.1f} s in "
        f"{f['batches']['without']:,} batches without tables that reference "
        f"course_enrollments, {f['seconds']['with']:.1f} s in {f['batches']['with']:,} "
        f"batches with three (kept: {kept}): **{ratio:.2f}x** (goal 1.5x: "
        f"{verdict(ratio, 1.5)}); the longest write transaction {longest:.3f} s (goal 1 s: "
        f"{verdict(longest, 1.0)}).",
    ]


def render(results: list[dict], notes: str, shapes: list[dict] | None = None) -> str:
    out = [
        "# Benchmarks",
        "",
        "Produced by `python -m bench.run` and `python -m bench.shapes` (see the README), on "
        "each server below; `python -m bench.report` writes this page again from the results "
        "kept in `docs/benchmarks/`.",
        "",
    ]
    for result in results:
        out += [*server_section(result), ""]
    for result in load_shapes() if shapes is None else shapes:
        out += [*shapes_section(result), ""]
    if shapes is None:
        for path in sorted((RESULTS / "separate").glob("*.json")):
            out += [*separate_section(json.loads(path.read_text())), ""]
    return "\n".join(out) + notes


def load() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]


def load_shapes(where: Path = RESULTS / "shapes") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(where.glob("*.json"))]


def write(notes: str) -> Path:
    PAGE.write_text(render(load(), notes))
    return PAGE


def main() -> int:
    from bench.notes import NOTES

    print(f"wrote {write(NOTES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
