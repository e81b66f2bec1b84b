"""The Sentry reporter: events and check-ins in process, on the wire, and in a real server."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ledger_rules
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sqlalchemy import create_engine

from invariants import ExitCode, Outcome, configure, run
from invariants.cli import main
from invariants.config import Config
from invariants.errors import DatabaseError, UsageError
from invariants.reporters.sentry import (
    MAX_EVENT_BYTES,
    RunFacts,
    SentryReporter,
    read_settings,
    rule_event,
)
from invariants.reports import RuleReport
from invariants.rule import Severity

TESTS = Path(__file__).parent
REPO = TESTS.parent
BUGSINK_UP = Path(__file__).parents[1].parent / "shared" / "sentry" / "bugsink-up"

EMAIL_RULES = '''"""A rule whose sample holds personal data (an email column)."""

from ledger_rules import accounts
from sqlalchemy import select

from invariants import invariant


@invariant("contact.negative_balance_email", scope_key="owner_id", severity="warning")
def negative_balance_email():
    """Owners to write to about a negative balance."""
    return select(accounts.c.id, accounts.c.owner_id, accounts.c.email).where(
        accounts.c.balance < 0
    )
'''

#: The rules the broken database violates, with their level and count.
VIOLATED = {
    "ledger.balance_not_negative": ("error", 3),
    "ledger.owner_named": ("warning", 1),
    "ledger.even_ids_python": ("info", 1),
    "contact.negative_balance_email": ("warning", 3),
}
PLUGINS = {"ledger": "ledger_rules", "contact": "email_rules"}


# -------------------------------------------------------------------------
# Helpers and fixtures
# -------------------------------------------------------------------------


class CapturingTransport(Transport):
    """Keeps every envelope the client hands over, instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def payloads(self, kind: str) -> list[dict[str, Any]]:
        return payloads(self.envelopes, kind)

    def raw(self) -> bytes:
        return b"".join(e.serialize() for e in self.envelopes)


def payloads(envelopes: list[Envelope], kind: str) -> list[dict[str, Any]]:
    """The JSON payloads of the items of one type, in the order they were sent."""
    return [
        json.loads(item.payload.get_bytes())
        for envelope in envelopes
        for item in envelope.items
        if item.type == kind
    ]


def make_broken_db(path: Path) -> str:
    """A ledger breaking every ledger rule once, with email addresses in its accounts."""
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -5), (1, -3), (2, -1), (3, 10), (3, 0)])
        owners = ledger_rules.owners
        conn.execute(owners.update().where(owners.c.id == 3).values(name=None))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sentry-plugins")
    (folder / "email_rules.py").write_text(EMAIL_RULES)
    return folder


@pytest.fixture
def broken_db(tmp_path: Path) -> str:
    return make_broken_db(tmp_path / "ledger.db")


@pytest.fixture(autouse=True)
def clean_sentry(monkeypatch: pytest.MonkeyPatch, plugin_dir: Path) -> Iterator[None]:
    """No SENTRY_* from the outside, and no SDK state carried from one test to the next."""
    for name in ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(plugin_dir))
    with sentry_sdk.isolation_scope(), sentry_sdk.new_scope():
        yield
    global_scope = sentry_sdk.get_global_scope()
    global_scope.get_client().close(timeout=0)
    global_scope.set_client(None)
    global_scope.clear()


@pytest.fixture
def host_transport() -> CapturingTransport:
    """The host application initialised Sentry itself, with a tag of its own."""
    transport = CapturingTransport()
    sentry_sdk.init(
        transport=transport, default_integrations=False, auto_enabling_integrations=False
    )
    sentry_sdk.get_global_scope().set_tag("host.tag", "the host's")
    return transport


def make_config(plugins: list[Any], **sentry: Any) -> Config:
    return configure(
        plugins=plugins,
        overrides={"sentry": sentry},
        entrypoints=False,
        discover=False,
        environ={},
    )


def attach(config: Config, transport: Transport) -> SentryReporter:
    """The reporter with its private client on ``transport`` (the CLI would use HTTP)."""
    reporter = SentryReporter.create(config, read_settings(config), transport)
    assert reporter is not None and reporter.client is not None
    if config.pluginmanager.has_plugin("sentryreporter"):  # the host-SDK one configure made
        config.pluginmanager.unregister(name="sentryreporter")
    config.pluginmanager.register(reporter, "sentryreporter")
    return reporter


def run_to_end(config: Config, url: str, **kwargs: Any) -> Any:
    """One run and the end of the process, as the CLI does it."""
    try:
        return run(url, config=config, **kwargs)
    finally:
        config.hook.invariants_unconfigure(config=config)


def by_rule(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["tags"]["invariant.rule"]: e for e in events}


# -------------------------------------------------------------------------
# (a) In process, through a capturing transport
# -------------------------------------------------------------------------


def test_one_event_per_violated_rule_with_title_level_tags_and_context(broken_db):
    config = make_config(
        ["ledger_rules", "email_rules"], environment="staging", release="app@1.2.3"
    )
    transport = CapturingTransport()
    attach(config, transport)

    report = run_to_end(config, broken_db, trigger="schedule")

    events = transport.payloads("event")
    assert len(events) == len(VIOLATED)
    assert transport.payloads("check_in") == []  # no monitor configured
    for rule_id, event in by_rule(events).items():
        level, count = VIOLATED[rule_id]
        assert event["fingerprint"] == ["invariants", rule_id]
        assert event["message"] == f"Invariant violated: {rule_id} ({count} rows)"
        assert event["level"] == level
        assert event["environment"] == "staging"
        assert event["release"] == "app@1.2.3"
        assert event["tags"] == {
            "invariant.rule": rule_id,
            "invariant.plugin": PLUGINS[rule_id.split(".")[0]],
            "invariant.severity": level,
            "invariant.outcome": "violated",
            "invariant.trigger": "schedule",
            "invariant.repaired": "no",
        }
        ctx = event["contexts"]["invariant"]
        assert ctx["count"] == count
        assert ctx["run_id"] == report.run_id
        assert ctx["duration"] >= 0
        assert ctx["sample"]
        assert "restore" not in ctx
        assert f"--db {broken_db}" in ctx["repair_dry_run"]
    balance = by_rule(events)["ledger.balance_not_negative"]["contexts"]["invariant"]
    assert "WHERE accounts.balance < 0" in balance["sql"]
    assert balance["sample"] == [
        {"id": 1, "owner_id": 1},
        {"id": 2, "owner_id": 1},
        {"id": 3, "owner_id": 2},
    ]
    assert balance["sample_columns_withheld"] == ["balance"]
    assert balance["check_one"].endswith("--scope owner_id=1 -v")


def test_an_email_column_never_reaches_the_transport(broken_db):
    config = make_config(["ledger_rules", "email_rules"])
    transport = CapturingTransport()
    attach(config, transport)

    run_to_end(config, broken_db, select=["contact.*"])

    raw = transport.raw()
    assert b"@example.org" not in raw
    (event,) = transport.payloads("event")
    ctx = event["contexts"]["invariant"]
    assert ctx["sample"] == [
        {"id": 1, "owner_id": 1},
        {"id": 2, "owner_id": 1},
        {"id": 3, "owner_id": 2},
    ]
    assert ctx["sample_columns_withheld"] == ["email"]


def test_include_columns_is_the_whole_allow_list(broken_db):
    config = make_config(["ledger_rules", "email_rules"], include_columns=["owner_id"])
    transport = CapturingTransport()
    attach(config, transport)

    run_to_end(config, broken_db, select=["contact.*"])

    (event,) = transport.payloads("event")
    assert event["contexts"]["invariant"]["sample"] == [
        {"owner_id": 1},
        {"owner_id": 1},
        {"owner_id": 2},
    ]
    assert b"@example.org" not in transport.raw()


def test_repaired_rules_are_one_level_lower_and_carry_a_working_restore_command(broken_db):
    config = make_config(["ledger_rules"])
    transport = CapturingTransport()
    attach(config, transport)

    report = run_to_end(config, broken_db, repair=True, select=["ledger.balance*"])

    assert report.reports[0].outcome is Outcome.REPAIRED
    (event,) = transport.payloads("event")
    assert event["message"] == "Invariant repaired: ledger.balance_not_negative (3 rows)"
    assert event["fingerprint"] == ["invariants", "ledger.balance_not_negative"]
    assert event["level"] == "warning"
    assert event["tags"]["invariant.repaired"] == "yes"
    ctx = event["contexts"]["invariant"]
    assert ctx["rows_changed"] == 3
    assert ctx["restore"] == f"invariant-run restore {report.run_id} --db {broken_db}"

    argv = shlex.split(ctx["restore"])
    assert argv[0] == "invariant-run"
    assert main(argv[1:]) == ExitCode.OK
    engine = create_engine(broken_db)
    with engine.connect() as conn:
        balances = conn.execute(ledger_rules.accounts.select()).all()
    engine.dispose()
    assert sorted(b.balance for b in balances)[:3] == [-5, -3, -1]


def test_a_dry_run_reports_violations_and_offers_no_restore(broken_db):
    config = make_config(["ledger_rules"])
    transport = CapturingTransport()
    attach(config, transport)

    run_to_end(config, broken_db, repair=True, dry_run=True, select=["ledger.balance*"])

    (event,) = transport.payloads("event")
    assert event["message"].startswith("Invariant violated: ")
    ctx = event["contexts"]["invariant"]
    assert "restore" not in ctx
    assert ctx["note"] == "dry run: would change 3 rows"


def test_a_rule_that_errors_is_an_exception_event_of_its_own(broken_db):
    config = make_config(["ledger_rules", "broken_rules"])
    transport = CapturingTransport()
    attach(config, transport)

    run_to_end(config, broken_db, select=["broken.raises", "broken.bad_sql"], trigger="ci")

    events = by_rule(transport.payloads("event"))
    raised = events["broken.raises"]
    assert raised["fingerprint"] == ["invariants", "broken.raises", "error"]
    assert raised["level"] == "error"
    assert raised["tags"]["invariant.outcome"] == "error"
    assert raised["tags"]["invariant.trigger"] == "ci"
    (exc,) = raised["exception"]["values"]
    assert (exc["type"], exc["value"]) == ("RuntimeError", "bug in the check")
    frames = exc["stacktrace"]["frames"]
    assert frames[-1]["function"] == "raises"
    assert frames[-1]["filename"] == "broken_rules.py"
    assert frames[-1]["context_line"] == 'raise RuntimeError("bug in the check")'
    (bad_sql,) = events["broken.bad_sql"]["exception"]["values"]
    assert bad_sql["type"] == "OperationalError"
    assert "no_such_column" in bad_sql["value"]


def test_a_host_initialised_sdk_is_reused_not_initialised_again(broken_db, host_transport):
    host_client = sentry_sdk.get_client()
    config = make_config(["ledger_rules"], environment="staging")
    reporter = config.pluginmanager.get_plugin("sentryreporter")
    assert reporter is not None and reporter.client is None

    run_to_end(config, broken_db, select=["ledger.balance*"])

    assert sentry_sdk.get_client() is host_client and host_client.is_active()
    (event,) = host_transport.payloads("event")
    assert event["fingerprint"] == ["invariants", "ledger.balance_not_negative"]
    assert event["tags"]["invariant.rule"] == "ledger.balance_not_negative"
    assert event["tags"]["host.tag"] == "the host's"  # the host's own scope applies
    assert event["environment"] == "staging"


def test_a_dsn_of_our_own_keeps_the_host_out(broken_db, host_transport):
    config = make_config(["ledger_rules"])
    transport = CapturingTransport()
    attach(config, transport)

    run_to_end(config, broken_db, select=["ledger.balance*"])

    (event,) = transport.payloads("event")
    assert "host.tag" not in event["tags"]
    assert host_transport.envelopes == []
    assert sentry_sdk.get_client().is_active()  # the host's client was left alone


def test_idle_without_a_dsn_or_a_host_sdk(broken_db):
    config = make_config(["ledger_rules"])
    assert config.pluginmanager.get_plugin("sentryreporter") is None
    assert config.pluginmanager.get_plugin("sentry") is not None


def test_an_empty_dsn_turns_reporting_off_even_with_a_host_sdk(broken_db, host_transport):
    config = configure(
        plugins=["ledger_rules"],
        options=argparse.Namespace(sentry_dsn=""),
        entrypoints=False,
        discover=False,
        environ={},
    )
    assert config.pluginmanager.get_plugin("sentryreporter") is None
    run_to_end(config, broken_db)
    assert host_transport.envelopes == []


def test_monitored_runs_check_in_in_progress_then_error_with_the_monitor_config(broken_db):
    config = make_config(
        ["ledger_rules"], monitor="nightly", schedule="0 3 * * *", checkin_margin=5, max_runtime=30
    )
    transport = CapturingTransport()
    attach(config, transport)

    report = run_to_end(config, broken_db, trigger="schedule", select=["ledger.balance*"])

    assert report.exit_code == ExitCode.VIOLATIONS
    first, last = transport.payloads("check_in")
    assert [first["status"], last["status"]] == ["in_progress", "error"]
    assert first["check_in_id"] == last["check_in_id"]
    assert first["monitor_slug"] == last["monitor_slug"] == "nightly"
    assert last["duration"] >= 0
    assert last["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 3 * * *"},
        "checkin_margin": 5,
        "max_runtime": 30,
    }


def test_a_clean_run_checks_in_ok_and_manual_runs_do_not_check_in(tmp_path):
    url = f"sqlite:///{tmp_path / 'clean.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, 5)])
    engine.dispose()
    statuses = {}
    for trigger in ("ci", "cli", "api"):
        config = make_config(["ledger_rules"], monitor="nightly")
        transport = CapturingTransport()
        attach(config, transport)
        run_to_end(config, url, trigger=trigger)
        statuses[trigger] = [c["status"] for c in transport.payloads("check_in")]
    assert statuses == {"ci": ["in_progress", "ok"], "cli": [], "api": []}


def test_a_run_that_dies_midway_closes_its_check_in_as_error(broken_db):
    class LoseTheDatabase:
        def invariants_rule_start(self, rule, index, total):
            raise DatabaseError("lost the database connection")

    config = make_config(["ledger_rules", LoseTheDatabase()], monitor="nightly")
    transport = CapturingTransport()
    attach(config, transport)

    with pytest.raises(DatabaseError):
        run_to_end(config, broken_db, trigger="ci")

    assert [c["status"] for c in transport.payloads("check_in")] == ["in_progress", "error"]


def test_a_failing_transport_never_fails_the_run(broken_db, caplog):
    class Refusing(CapturingTransport):
        def capture_envelope(self, envelope: Envelope) -> None:
            raise ConnectionError("sentry is down")

    config = make_config(["ledger_rules"], monitor="nightly")
    attach(config, Refusing())

    report = run_to_end(config, broken_db, trigger="ci")

    assert report.exit_code == ExitCode.VIOLATIONS
    assert len(report.reports) == 3
    assert "sentry: reporting failed (ConnectionError: sentry is down)" in caplog.text


def test_embedded_runs_reuse_a_configuration_and_leave_no_sender_threads(broken_db):
    def senders() -> int:
        return sum(t.name == "sentry-sdk.BackgroundWorker" for t in threading.enumerate())

    before = senders()
    dsn = f"http://key@127.0.0.1:{free_port()}/1"  # nothing listens: sent, refused, dropped
    for _ in range(3):  # a long-lived application: run after run, no unconfigure
        run(broken_db, config=make_config(["ledger_rules"], dsn=dsn))
    config = make_config(["ledger_rules"])
    transport = CapturingTransport()
    attach(config, transport)
    for _ in range(2):
        run(broken_db, config=config, select=["ledger.balance*"])
    assert len(transport.payloads("event")) == 2

    deadline = time.monotonic() + 5
    while senders() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert senders() == before


def test_unknown_and_malformed_sentry_settings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown key 'dns'"):
        make_config(["ledger_rules"], dns="http://key@127.0.0.1/1")
    with pytest.raises(UsageError, match="flush_timeout"):
        make_config(["ledger_rules"], flush_timeout="soon")
    with pytest.raises(UsageError, match="include_columns"):
        make_config(["ledger_rules"], include_columns="email")
    with pytest.raises(UsageError, match="schedule"):
        make_config(["ledger_rules"], schedule="nightly")
    with pytest.raises(UsageError, match="sentry DSN"):
        make_config(["ledger_rules"], dsn="not a dsn")


def test_events_stay_far_below_the_one_mebibyte_limit():
    wide = {f"col{i}": "x" * 10_000 for i in range(50)}
    report = RuleReport(
        rule_id="big.rule",
        description="A rule with a huge sample.",
        severity=Severity.ERROR,
        tags=frozenset(),
        plugin="big",
        outcome=Outcome.VIOLATED,
        duration=0.1,
        count=10_000,
        sample=tuple({"id": i, **wide} for i in range(10_000)),
        sql="SELECT " + ", ".join(f"col{i}" for i in range(100_000)),
    )
    facts = RunFacts(
        run_id="r1", trigger="ci", database="sqlite://", include_columns=frozenset(wide) | {"id"}
    )
    event = rule_event(report, facts)
    assert len(json.dumps(event).encode()) <= MAX_EVENT_BYTES
    assert event["message"] == "Invariant violated: big.rule (10000 rows)"


# -------------------------------------------------------------------------
# (b) On the wire: the CLI as a subprocess against a loopback envelope receiver
# -------------------------------------------------------------------------


class EnvelopeSink(ThreadingHTTPServer):
    """A loopback receiver of ``POST /api/<project>/envelope/``, keeping what it parsed."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EnvelopeHandler)
        self.received: list[tuple[str, Envelope, bytes]] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def dsn(self, project: int = 7) -> str:
        return f"http://public@127.0.0.1:{self.port}/{project}"

    def envelopes(self) -> list[Envelope]:
        with self.lock:
            return [e for _, e, _ in self.received]


class _EnvelopeHandler(BaseHTTPRequestHandler):
    server: EnvelopeSink

    def do_POST(self) -> None:
        match = re.fullmatch(r"/api/(\d+)/envelope/", self.path.partition("?")[0])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli  # only when the sender had it, so it is installed

            body = brotli.decompress(body)
        if not match:
            self.send_error(404)
            return
        envelope = Envelope.deserialize(body)
        with self.server.lock:
            self.server.received.append((match[1], envelope, body))
        reply = json.dumps({"id": envelope.headers.get("event_id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what arrived, not the access log."""


@pytest.fixture
def sink() -> Iterator[EnvelopeSink]:
    server = EnvelopeSink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def cli(
    *args: str, cwd: Path, plugin_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m invariants`` with the test plugins, and no outside INVARIANTS_/SENTRY_/CI."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INVARIANTS_", "SENTRY_")) and k != "CI"
    }
    environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(plugin_dir)])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invariants", "-p", "ledger_rules", "-p", "no:billing", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_delivers_events_and_check_ins_before_it_exits(broken_db, tmp_path, sink, plugin_dir):
    (tmp_path / "invariants.toml").write_text(
        '[sentry]\nmonitor = "invariants-nightly"\nschedule = "0 3 * * *"\n'
        'checkin_margin = 10\nmax_runtime = 30\nrelease = "app@1.2.3"\n'
    )
    result = cli(
        "--db",
        broken_db,
        "-p",
        "email_rules",
        "--sentry-dsn",
        sink.dsn(),
        "--sentry-environment",
        "ci-test",
        cwd=tmp_path,
        plugin_dir=plugin_dir,
        env={"CI": "1"},
    )

    assert result.returncode == ExitCode.VIOLATIONS, result.stderr
    assert result.stderr == ""
    assert f"sentry: http://127.0.0.1:{sink.port}/7, environment ci-test" in result.stdout
    # Everything is here the moment the process is gone: it flushed before exiting.
    envelopes = sink.envelopes()
    assert {project for project, _, _ in sink.received} == {"7"}
    assert all(b"@example.org" not in body for _, _, body in sink.received)
    events = by_rule(payloads(envelopes, "event"))
    assert set(events) == set(VIOLATED)
    for rule_id, event in events.items():
        assert event["fingerprint"] == ["invariants", rule_id]
        assert event["level"] == VIOLATED[rule_id][0]
        assert event["environment"] == "ci-test"
        assert event["release"] == "app@1.2.3"
        assert event["tags"]["invariant.trigger"] == "ci"
    check_ins = payloads(envelopes, "check_in")
    assert [c["status"] for c in check_ins] == ["in_progress", "error"]
    assert len({c["check_in_id"] for c in check_ins}) == 1
    assert check_ins[0]["monitor_slug"] == "invariants-nightly"
    assert check_ins[-1]["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 3 * * *"},
        "checkin_margin": 10,
        "max_runtime": 30,
    }
    assert check_ins[-1]["environment"] == "ci-test"


def test_cli_reads_sentry_dsn_from_the_environment_and_checks_in_ok(
    broken_db, tmp_path, sink, plugin_dir
):
    result = cli(
        "--db",
        broken_db,
        "--repair",
        "--monitor",
        "repair-job",
        cwd=tmp_path,
        plugin_dir=plugin_dir,
        env={"SENTRY_DSN": sink.dsn(3)},
    )

    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    envelopes = sink.envelopes()
    events = by_rule(payloads(envelopes, "event"))
    repaired = events["ledger.balance_not_negative"]
    assert repaired["message"] == "Invariant repaired: ledger.balance_not_negative (3 rows)"
    assert repaired["level"] == "warning"
    assert repaired["contexts"]["invariant"]["restore"].startswith("invariant-run restore ")
    # An explicit --monitor checks in whatever started the run (here: by hand, trigger cli).
    assert [c["status"] for c in payloads(envelopes, "check_in")] == ["in_progress", "ok"]


def test_an_unknown_sentry_key_stops_the_cli_with_one_line(broken_db, tmp_path, plugin_dir):
    (tmp_path / "invariants.toml").write_text(
        '[sentry]\ndsn = "http://k@127.0.0.1:1/1"\nmonitr = "x"\n'
    )
    result = cli("--db", broken_db, cwd=tmp_path, plugin_dir=plugin_dir)
    assert result.returncode == ExitCode.USAGE_ERROR
    assert result.stderr.startswith("invariant-run: error: ")
    assert "unknown key 'monitr'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -------------------------------------------------------------------------
# (c) Sentry down is not our outage
# -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(*args: str, **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    clock = time.monotonic()
    result = cli(*args, **kwargs)
    return time.monotonic() - clock, result


def test_a_closed_port_costs_nothing_and_changes_no_exit_code(broken_db, tmp_path, plugin_dir):
    args = ("--db", broken_db, "--no-history")
    plain_time, plain = timed(*args, cwd=tmp_path, plugin_dir=plugin_dir)
    dsn = f"http://key@127.0.0.1:{free_port()}/1"  # nothing listens there
    down_time, down = timed(
        *args, "--sentry-dsn", dsn, "--monitor", "m", cwd=tmp_path, plugin_dir=plugin_dir
    )

    assert down.returncode == plain.returncode == ExitCode.VIOLATIONS
    assert down_time < plain_time + 3, (plain_time, down_time)
    assert "Traceback" not in down.stderr


def test_a_server_that_never_answers_costs_at_most_the_flush_timeout(
    broken_db, tmp_path, plugin_dir
):
    (tmp_path / "invariants.toml").write_text("[sentry]\nflush_timeout = 0.5\n")
    with socket.socket() as silent:  # accepts connections (backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        dsn = f"http://key@127.0.0.1:{silent.getsockname()[1]}/1"
        args = ("--db", broken_db, "--no-history")
        plain_time, plain = timed(*args, cwd=tmp_path, plugin_dir=plugin_dir)
        slow_time, slow = timed(*args, "--sentry-dsn", dsn, cwd=tmp_path, plugin_dir=plugin_dir)

    assert slow.returncode == plain.returncode == ExitCode.VIOLATIONS
    assert slow_time < plain_time + 3, (plain_time, slow_time)
    assert "sentry: events not delivered within 0.5 s" in slow.stderr


# -------------------------------------------------------------------------
# (d) End to end: a real Sentry-protocol server (Bugsink) on loopback
# -------------------------------------------------------------------------


class Bugsink:
    """A running Bugsink and its API, as ``bugsink-up`` started it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.dsn = values["SENTRY_E2E_DSN"]
        self.api = values["SENTRY_E2E_API"]
        self.token = values["SENTRY_E2E_TOKEN"]
        self.pid = int(values["SENTRY_E2E_PID"])
        self.project = self.dsn.rstrip("/").rsplit("/", 1)[-1]

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.api}/{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def bugsink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bugsink]:
    if not BUGSINK_UP.is_file():
        pytest.skip(f"{BUGSINK_UP} not found (shared/ is expected beside the repository)")
    venv = Path(os.environ.get("BUGSINK_VENV", "/tmp/bugsink-venv"))
    workdir = tmp_path_factory.mktemp("bugsink")
    result = subprocess.run(
        ["bash", str(BUGSINK_UP), str(free_port()), str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        if not (venv / "bin" / "bugsink-manage").exists():
            pytest.skip(f"could not install Bugsink into {venv} (no network?): {tail}")
        pytest.fail(f"bugsink-up failed ({result.returncode}): {tail}")
    values = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("SENTRY_E2E_"):
            values[key] = shlex.split(value)[0]
    server = Bugsink(values)
    yield server
    server.stop()


def test_each_violated_rule_is_one_issue_across_runs_in_a_real_server(
    bugsink, broken_db, tmp_path, plugin_dir
):
    args = ("--db", broken_db, "-p", "email_rules", "--sentry-dsn", bugsink.dsn)
    for _ in range(2):
        result = cli(*args, "--sentry-environment", "e2e", cwd=tmp_path, plugin_dir=plugin_dir)
        assert result.returncode == ExitCode.VIOLATIONS, result.stderr

    issues = bugsink.get(f"issues/?project={bugsink.project}")["results"]
    titles = {issue["calculated_value"]: issue for issue in issues}
    assert len(issues) == len(VIOLATED)
    for rule_id, (level, count) in VIOLATED.items():
        issue = titles[f"Invariant violated: {rule_id} ({count} rows)"]
        assert issue["digested_event_count"] == 2  # the second run joined the same issue
        events = bugsink.get(f"events/?issue={issue['id']}")["results"]
        assert len(events) == 2
        data = bugsink.get(f"events/{events[0]['id']}/")["data"]
        assert data["level"] == level
        assert data["fingerprint"] == ["invariants", rule_id]
        assert data["environment"] == "e2e"
        assert data["tags"]["invariant.rule"] == rule_id
        assert data["tags"]["invariant.severity"] == level  # violated: level is the severity
        assert data["tags"]["invariant.repaired"] == "no"
        assert data["contexts"]["invariant"]["count"] == count
        assert "@example.org" not in json.dumps(data)
