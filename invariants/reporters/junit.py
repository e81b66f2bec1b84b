"""The JUnit XML reporter: one testcase per rule, so any CI shows the run like a test suite."""

from __future__ import annotations

import platform
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from invariants.hookspecs import hookimpl
from invariants.reporters.files import check_writable, emit
from invariants.reporters.terminal import format_row
from invariants.reports import Outcome, RuleReport, RunReport
from invariants.rule import Severity

if TYPE_CHECKING:
    from invariants.config import Config
    from invariants.session import Session

__all__ = ["run_to_junit"]


def _fails(report: RuleReport, fail_on: Severity) -> bool:
    return report.outcome is Outcome.VIOLATED and report.severity >= fail_on


def _testcase(report: RuleReport, fail_on: Severity) -> ET.Element:
    case = ET.Element(
        "testcase",
        name=report.rule_id,
        classname=f"invariants.{report.plugin}",
        time=f"{report.duration:.3f}",
    )
    sample = "\n".join(format_row(row) for row in report.sample)
    if report.outcome is Outcome.ERROR:
        node = ET.SubElement(case, "error", message=report.message or "error", type="error")
        node.text = report.longrepr or report.message or ""
    elif _fails(report, fail_on):
        message = f"{report.count} rows violate: {report.description}"
        node = ET.SubElement(case, "failure", message=message, type=str(report.severity))
        node.text = f"sample:\n{sample}\n\nsql:\n{report.sql or '-'}"
    elif report.outcome is Outcome.SKIPPED:
        ET.SubElement(case, "skipped", message=report.message or "skipped")
    out = []
    if report.outcome is Outcome.VIOLATED and not _fails(report, fail_on):
        out.append(f"{report.count} rows violate ({report.severity}, below --fail-on)\n{sample}")
    if report.repair is not None:
        out.append(f"repaired: {report.repair.rows_changed} rows changed")
    if out:
        ET.SubElement(case, "system-out").text = "\n".join(out)
    return case


def run_to_junit(run: RunReport, fail_on: Severity) -> str:
    """The run as a JUnit XML document (one testsuite, one testcase per rule)."""
    counts = run.counts
    failures = sum(1 for r in run.reports if _fails(r, fail_on))
    suite = ET.Element(
        "testsuite",
        name="invariants",
        tests=str(len(run.reports)),
        failures=str(failures),
        errors=str(counts[Outcome.ERROR]),
        skipped=str(counts[Outcome.SKIPPED]),
        time=f"{run.duration:.3f}",
        timestamp=run.started_at.replace(tzinfo=None, microsecond=0).isoformat(),
        hostname=platform.node() or "localhost",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", run.run_id),
        ("database", run.database),
        ("trigger", run.trigger),
        ("repair", str(run.repair).lower()),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for report in run.reports:
        suite.append(_testcase(report, fail_on))
    root = ET.Element(
        "testsuites",
        name="invariant-run",
        tests=suite.get("tests", "0"),
        failures=str(failures),
        errors=suite.get("errors", "0"),
        time=suite.get("time", "0"),
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


class JUnitReporter:
    """Writes the JUnit document at the end, to ``--output`` or standard output."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @hookimpl
    def invariants_sessionfinish(self, session: Session, run: RunReport) -> None:
        emit(self.config, run_to_junit(run, self.config.settings.fail_on))


@hookimpl
def invariants_configure(config: Config) -> None:
    """Active with ``--format junit``."""
    if config.getoption("format") == "junit":
        if config.getoption("output"):
            check_writable(config.getoption("output"))
        config.pluginmanager.register(JUnitReporter(config), "junitreporter")
