"""``--repair --dry-run``, ``restore`` and ``history`` from the command line."""

from __future__ import annotations

import json
import re

from test_cli import assert_one_line_error, ledger_db, run_ledger  # noqa: F401  (fixture)

from invariants.exitcodes import ExitCode


def test_dry_run_then_repair_then_restore_then_history(ledger_db, tmp_path):  # noqa: F811
    dry = run_ledger(ledger_db, tmp_path, "--repair", "--dry-run", "-k", "balance")
    assert dry.returncode == ExitCode.VIOLATIONS
    assert "would change 3 rows in accounts" in dry.stdout
    assert "balance -5 -> 0" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout

    repaired = run_ledger(ledger_db, tmp_path, "--repair", "-k", "balance")
    assert repaired.returncode == ExitCode.OK
    run_id = re.search(r"invariant-run restore (\w+)", repaired.stdout).group(1)

    preview = run_ledger(ledger_db, tmp_path, "restore", run_id, "--dry-run")
    assert "would put back 3 rows" in preview.stdout
    restored = run_ledger(ledger_db, tmp_path, "restore", run_id)
    assert restored.returncode == ExitCode.OK, restored.stderr
    assert "put back 3 rows" in restored.stdout
    again = run_ledger(ledger_db, tmp_path, "-k", "balance")
    assert "VIOLATED (3 rows)" in again.stdout

    history = run_ledger(ledger_db, tmp_path, "history")
    assert run_id in history.stdout and f"restore of {run_id}" in history.stdout
    trend = run_ledger(
        ledger_db, tmp_path, "history", "--rule", "ledger.balance_not_negative", "--format", "json"
    )
    runs = json.loads(trend.stdout)["runs"]
    assert [r["outcome"] for r in runs][:2] == ["violated", "repaired"]


def test_restore_of_an_unknown_run_is_one_line(ledger_db, tmp_path):  # noqa: F811
    result = run_ledger(ledger_db, tmp_path, "restore", "nosuchrun")
    assert_one_line_error(result, ExitCode.USAGE_ERROR, "nosuchrun")


def test_dry_run_without_repair_is_a_usage_error(ledger_db, tmp_path):  # noqa: F811
    assert_one_line_error(
        run_ledger(ledger_db, tmp_path, "--dry-run"), ExitCode.USAGE_ERROR, "--dry-run"
    )


def test_history_of_a_fresh_database(ledger_db, tmp_path):  # noqa: F811
    result = run_ledger(ledger_db, tmp_path, "history")
    assert result.returncode == 0
    assert "no runs recorded yet" in result.stdout
