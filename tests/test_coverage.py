"""The one definition (enrollments_phase1.coverage): eligible pairs, statuses, anomalies,
percentages."""

import pytest
from sqlalchemy import text

from enrollments_phase1 import coverage, sample_data
from enrollments_phase1.coverage import coverage_percent


def report_of(engine, limit=10):
    with engine.connect() as conn:
        return coverage.audit(conn, limit=limit)


def counts_of(report) -> dict:
    return {
        "active_memberships": report.active_memberships,
        "eligible_pairs": report.eligible_pairs,
        "covered": report.covered,
        "inactive": report.inactive,
        "missing": report.missing,
        "anomalies": report.anomalies,
    }


def eligible(engine) -> set[tuple[int, int]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(text(coverage.eligible_pairs_sql()))}


def test_story_counts(story):
    assert counts_of(report_of(story)) == sample_data.STORY_BEFORE


def test_eligible_pairs_follow_the_contract(story):
    # (student, course): Ada in math through two groups counts once; Ada in physics;
    # Zoë in math; Bob in physics and in the archived course; Émile in his own school's
    # course; the archived student Olga. Not: Zoë in physics (membership inactive), Nina
    # (active NULL), Grace and Alan (not students), Émile in school 1's math.
    assert eligible(story) == {(1, 1), (1, 2), (2, 1), (3, 2), (3, 3), (5, 4), (6, 3)}


def test_samples_carry_names_groups_and_kinds(story):
    report = report_of(story)
    assert [(p.student_id, p.course_id) for p in report.missing_pairs] == [(1, 2), (3, 2), (5, 4)]
    assert [(p.student_id, p.course_id) for p in report.inactive_pairs] == [(2, 1), (6, 3)]
    bob = report.missing_pairs[1]
    assert bob.student_name == 'Bob "Tables" \\ 50% :done'
    assert bob.course_name == "Physics"
    assert [p.role for p in report.anomaly_pairs["non_student"]] == ["teacher", "admin"]
    assert [(p.student_id, p.course_id) for p in report.anomaly_pairs["cross_school"]] == [(5, 1)]


def test_groups_counts_the_memberships_behind_a_pair(story):
    report = report_of(story)
    assert report.active_memberships == 11
    # Ada's pair with Physics has one group; in the story every uncovered pair has one.
    assert [p.groups for p in report.missing_pairs] == [1, 1, 1]
    with story.begin() as conn:  # Ada joins a second Physics group
        conn.execute(text("INSERT INTO groups (school_id, course_id, name) VALUES (1, 2, 'B')"))
        conn.execute(
            text("INSERT INTO group_members (school_id, group_id, user_id) VALUES (1, 6, 1)")
        )
    report = report_of(story)
    assert report.missing_pairs[0].groups == 2 and report.missing == 3
    assert report.active_memberships == 12


def test_classified_and_eligible_pairs_agree(story):
    with story.connect() as conn:
        classified = {
            (r.student_id, r.course_id)
            for r in conn.execute(text(coverage.classified_pairs_sql()))
            if r.status in ("covered", "inactive", "missing")
        }
    assert classified == eligible(story)


def test_limit_bounds_the_samples(story):
    report = report_of(story, limit=1)
    assert len(report.missing_pairs) == 1 and report.missing == 3
    assert report_of(story, limit=0).missing_pairs == []


def test_no_memberships_is_full_coverage(legacy):
    report = report_of(legacy)
    assert (report.eligible_pairs, report.coverage_percent, report.status) == (0, 100.0, "pass")


@pytest.mark.parametrize(
    ("covered", "eligible", "percent"),
    [
        (0, 0, 100.0),
        (9_999, 10_000, 99.99),
        (999_999, 1_000_000, 99.99),
        (1, 3, 33.33),
        (2, 3, 66.66),
        (10, 10, 100.0),
    ],
)
def test_coverage_percent_never_rounds_up_to_100(covered, eligible, percent):
    assert coverage_percent(covered, eligible) == percent


def test_statements_have_no_bind_markers_or_percent_signs():
    for sql in (
        coverage.counts_sql(),
        coverage.samples_sql([(-2147483648, 2147483647, coverage.SAMPLED_STATUSES, None)], 10),
        coverage.eligible_pairs_sql(),
    ):
        assert "%" not in sql and ":" not in sql.replace("::", "")
