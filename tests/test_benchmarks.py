"""The benchmark harness at a tiny size, so it cannot rot (timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.generate import NOW, drift_counts, generate
from invariants import run
from invariants.database import engine_from_url

ROOT = Path(__file__).parent.parent


def test_generated_drift_is_exactly_what_the_checks_find(tmp_path):
    engine = engine_from_url(f"sqlite:///{tmp_path / 'g.db'}", create=True)
    generate(engine, 2000)
    report = run(
        engine,
        now=NOW,
        history=False,
        plugins=["invariants_billing"],
        entrypoints=False,
        discover=False,
        environ={},
    )
    assert {r.rule_id: r.count for r in report.reports} == drift_counts(2000)


def test_harness_produces_the_table(tmp_path):
    output = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--users",
            "300",
            "--repeat",
            "1",
            "--dialects",
            "sqlite",
            "--memory-at",
            "100",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    for row in (
        "invariant-run (check)",
        "hand-written SQL repairs",
        "per-user ORM loop",
        "one user's check",
        "check / hand-written SQL",
        "per-user ORM loop / repair",
    ):
        assert row in text
    assert output.with_suffix(".json").exists()
