"""``invariant-run`` as a user runs it: a real process, its output and its exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import ledger_rules
import pytest
import xmlschema
from sqlalchemy import create_engine

from invariants.exitcodes import ExitCode

TESTS = Path(__file__).parent
SCHEMA = TESTS.parent / "invariants" / "schemas" / "run-v1.json"


def invariant_run(
    *args: str, cwd: Path, env: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANTS_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invariants", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.fixture
def ledger_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -5), (1, -3), (2, -1), (3, 10)])
    engine.dispose()
    return url


def run_ledger(ledger_db: str, tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return invariant_run(
        "--db", ledger_db, "-p", "ledger_rules", "-p", "no:billing", *args, cwd=tmp_path, **kw
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("invariant-run: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_text_output_reads_like_pytest(ledger_db, tmp_path):
    result = run_ledger(ledger_db, tmp_path)
    assert result.returncode == ExitCode.VIOLATIONS
    out = result.stdout
    assert "ledger.balance_not_negative ..." in out
    assert "VIOLATED (3 rows)" in out
    assert "sqlite:///" in out
    summary = out.strip().splitlines()
    assert any(line.startswith("=") and "1 violated" in line and "held" in line for line in summary)
    assert "--repair" in out


def test_verbose_shows_sample_rows_and_quiet_hides_held(ledger_db, tmp_path):
    verbose = run_ledger(ledger_db, tmp_path, "-vv")
    assert "owner_id=1" in verbose.stdout and "balance=-5" in verbose.stdout
    assert "sql: SELECT" in verbose.stdout
    quiet = run_ledger(ledger_db, tmp_path, "-q")
    assert "ledger.owner_named" not in quiet.stdout
    assert "ledger.balance_not_negative" in quiet.stdout


def test_repair_then_clean_run(ledger_db, tmp_path):
    repaired = run_ledger(ledger_db, tmp_path, "--repair", "-k", "not slow")
    assert repaired.returncode == ExitCode.OK, repaired.stdout
    assert "REPAIRED (3 rows, 3 changed)" in repaired.stdout
    again = run_ledger(ledger_db, tmp_path, "-k", "not slow")
    assert again.returncode == ExitCode.OK
    assert "VIOLATED" not in again.stdout


def test_scope_runs_one_entity(ledger_db, tmp_path):
    result = run_ledger(ledger_db, tmp_path, "--scope", "owner_id=2", "-k", "balance")
    assert "VIOLATED (1 row)" in result.stdout
    clean = run_ledger(ledger_db, tmp_path, "--scope", "owner_id=3", "-k", "balance")
    assert clean.returncode == ExitCode.OK


def test_keyword_and_tag_selection(ledger_db, tmp_path):
    listed = run_ledger(ledger_db, tmp_path, "--list", "-k", "ledger and not owner")
    assert "ledger.balance_not_negative" in listed.stdout
    assert "ledger.owner_named" not in listed.stdout
    tagged = run_ledger(ledger_db, tmp_path, "--list", "--tag", "money")
    assert tagged.stdout.count("ledger.") == 1


def test_json_output_validates_against_the_schema(ledger_db, tmp_path):
    result = run_ledger(ledger_db, tmp_path, "--format", "json")
    document = json.loads(result.stdout)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    rules = {r["id"]: r for r in document["rules"]}
    assert rules["ledger.balance_not_negative"]["count"] == 3
    assert document["exit_code"] == result.returncode == ExitCode.VIOLATIONS
    assert document["summary"]["violated"] == 1


def test_junit_output_validates_against_a_schema(ledger_db, tmp_path):
    target = tmp_path / "report.xml"
    result = run_ledger(ledger_db, tmp_path, "--format", "junit", "--output", str(target))
    assert result.returncode == ExitCode.VIOLATIONS
    schema = xmlschema.XMLSchema(str(TESTS / "junit.xsd"))
    schema.validate(str(target))
    text = target.read_text()
    assert 'name="ledger.balance_not_negative"' in text
    assert "<failure" in text
    assert "ledger.balance_not_negative" in result.stdout  # the terminal still shows the run


def test_text_output_to_a_file(ledger_db, tmp_path):
    target = tmp_path / "report.txt"
    run_ledger(ledger_db, tmp_path, "--output", str(target))
    assert "VIOLATED (3 rows)" in target.read_text()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("--no-such-option",), ExitCode.USAGE_ERROR, "--no-such-option"),
        (("--sample", "-3"), ExitCode.USAGE_ERROR, "--sample"),
        (("--format", "yaml"), ExitCode.USAGE_ERROR, "yaml"),
        (("-k", "and ("), ExitCode.USAGE_ERROR, "-k"),
        (("--scope", "tenant_id=4"), ExitCode.USAGE_ERROR, "tenant_id"),
        (("--scope", "owner_id"), ExitCode.USAGE_ERROR, "KEY=VALUE"),
        (("--scope", "owner_id=abc"), ExitCode.USAGE_ERROR, "owner_id=abc"),
        (("no.such_rule",), ExitCode.NO_RULES, "no invariant selected"),
        (("--output", "/no/such/folder/x.json"), ExitCode.USAGE_ERROR, "/no/such/folder"),
    ],
)
def test_bad_input_is_one_line(ledger_db, tmp_path, args, code, needle):
    assert_one_line_error(run_ledger(ledger_db, tmp_path, *args), code, needle)


@pytest.mark.parametrize(
    ("url", "code", "needle"),
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:9/nowhere",
            ExitCode.INTERNAL_ERROR,
            "cannot connect",
        ),
        ("postgresq://postgres@127.0.0.1/db", ExitCode.USAGE_ERROR, "unknown database dialect"),
        ("not a url", ExitCode.USAGE_ERROR, "not a database URL"),
        ("sqlite:///dmeo.db", ExitCode.INTERNAL_ERROR, "does not exist"),
        ("postgresql+psycopg://app:s3cret@127.0.0.1:9/x", ExitCode.INTERNAL_ERROR, "***"),
    ],
)
def test_bad_database_urls(tmp_path, url, code, needle):
    result = invariant_run("--db", url, "-p", "ledger_rules", cwd=tmp_path)
    assert_one_line_error(result, code, needle)
    assert "s3cret" not in result.stderr + result.stdout
    assert not (tmp_path / "dmeo.db").exists()


def test_missing_database_url(tmp_path):
    assert_one_line_error(
        invariant_run("-p", "ledger_rules", cwd=tmp_path), ExitCode.USAGE_ERROR, "--db"
    )


def test_broken_plugin_is_named(ledger_db, tmp_path):
    (tmp_path / "exploding.py").write_text("raise ImportError('cannot import thing')\n")
    result = run_ledger(
        ledger_db, tmp_path, "-p", "exploding", env={"PYTHONPATH": f"{TESTS}{os.pathsep}{tmp_path}"}
    )
    assert_one_line_error(result, ExitCode.USAGE_ERROR, "exploding", "cannot import thing")
    missing = run_ledger(ledger_db, tmp_path, "-p", "no_such_module_here")
    assert_one_line_error(missing, ExitCode.USAGE_ERROR, "no_such_module_here")


def test_duplicate_rule_ids_name_both_plugins(ledger_db, tmp_path):
    (tmp_path / "copycat.py").write_text(
        "from ledger_rules import balance_not_negative as original\n"
        "from invariants import invariant\n"
        "@invariant('ledger.balance_not_negative')\n"
        "def again():\n    return original.check_fn()\n"
    )
    result = run_ledger(
        ledger_db, tmp_path, "-p", "copycat", env={"PYTHONPATH": f"{TESTS}{os.pathsep}{tmp_path}"}
    )
    assert_one_line_error(
        result, ExitCode.USAGE_ERROR, "ledger_rules", "copycat", "ledger.balance_not_negative"
    )


def test_unknown_config_key_is_named(ledger_db, tmp_path):
    (tmp_path / "invariants.toml").write_text("sample = 3\nsamples = 4\n")
    result = run_ledger(ledger_db, tmp_path)
    assert_one_line_error(result, ExitCode.USAGE_ERROR, "samples", "invariants.toml")


def test_config_file_and_environment_precedence(ledger_db, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.invariants]\n"
        f'database_url = "{ledger_db}"\n'
        'plugins = ["ledger_rules"]\n'
        "sample = 1\n"
        '[tool.invariants.severity]\n"ledger.balance_not_negative" = "warning"\n'
    )
    from_file = invariant_run("-p", "no:billing", "--format", "json", cwd=tmp_path)
    rules = {r["id"]: r for r in json.loads(from_file.stdout)["rules"]}
    assert len(rules["ledger.balance_not_negative"]["sample"]) == 1
    assert rules["ledger.balance_not_negative"]["severity"] == "warning"
    assert from_file.returncode == ExitCode.OK
    from_env = invariant_run(
        "-p", "no:billing", "--format", "json", cwd=tmp_path, env={"INVARIANTS_SAMPLE": "2"}
    )
    assert len(json.loads(from_env.stdout)["rules"][0]["sample"]) == 2
    from_cli = invariant_run(
        "-p",
        "no:billing",
        "--format",
        "json",
        "--sample",
        "3",
        cwd=tmp_path,
        env={"INVARIANTS_SAMPLE": "2"},
    )
    assert len(json.loads(from_cli.stdout)["rules"][0]["sample"]) == 3


def test_database_url_expands_environment_variables(ledger_db, tmp_path):
    (tmp_path / "invariants.toml").write_text(
        'database_url = "sqlite:///${LEDGER_DIR}/ledger.db"\nplugins = ["ledger_rules"]\n'
    )
    result = invariant_run("-p", "no:billing", cwd=tmp_path, env={"LEDGER_DIR": str(tmp_path)})
    assert result.returncode == ExitCode.VIOLATIONS, result.stderr
    unset = invariant_run("-p", "no:billing", cwd=tmp_path)
    assert_one_line_error(unset, ExitCode.USAGE_ERROR, "LEDGER_DIR")


def test_interrupt_exits_two(tmp_path):
    (tmp_path / "sleepy.py").write_text(
        "from sqlalchemy import select, text\n"
        "from invariants import invariant\n"
        "@invariant('sleepy.forever')\n"
        "def forever():\n"
        "    return select(text('n')).select_from(text(\"(WITH RECURSIVE c(n) AS (SELECT 1 UNION"
        ' ALL SELECT n + 1 FROM c WHERE n < 500000000) SELECT n FROM c) AS big"))\n'
    )
    db = tmp_path / "empty.db"
    create_engine(f"sqlite:///{db}").connect().close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANTS_")}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invariants",
            "--db",
            f"sqlite:///{db}",
            "-p",
            "sleepy",
            "-p",
            "no:billing",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err


def test_plugins_listing(tmp_path):
    result = invariant_run("plugins", "-p", "ledger_rules", cwd=tmp_path)
    assert result.returncode == 0
    assert "ledger_rules" in result.stdout
    assert "terminal" in result.stdout and "runner" in result.stdout


def _run_on_a_terminal(args: list[str], cwd: Path, env: dict) -> str:
    """Run the CLI with a pseudo-terminal as its standard output; return what it printed."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invariants", *args],
        cwd=cwd,
        env=env,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_shows_on_a_terminal_only(ledger_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CI",) and not k.startswith("INV")}
    env["PYTHONPATH"] = str(TESTS)
    args = ["--db", ledger_db, "-p", "ledger_rules", "-p", "no:billing", "--no-history"]
    shown = _run_on_a_terminal(args, tmp_path, env)
    assert "[1/3] " in shown and "[3/3] " in shown
    quiet_in_ci = _run_on_a_terminal(args, tmp_path, {**env, "CI": "true"})
    assert "[1/3]" not in quiet_in_ci and "ledger.balance_not_negative" in quiet_in_ci
    piped = run_ledger(ledger_db, tmp_path)
    assert "[1/3]" not in piped.stdout


@pytest.mark.parametrize(
    ("argv", "command", "rest"),
    [
        (["history", "--last", "3"], "history", ["--last", "3"]),
        (
            ["--db", "sqlite:///x.db", "restore", "abc"],
            "restore",
            ["--db", "sqlite:///x.db", "abc"],
        ),
        (["--repair", "history"], "history", ["--repair"]),
        (["--sentry-environment", "demo", "-v"], None, ["--sentry-environment", "demo", "-v"]),
        (["-k", "history"], None, ["-k", "history"]),
        (["billing.profile_exists"], None, ["billing.profile_exists"]),
    ],
)
def test_subcommands_are_found_among_options(argv, command, rest):
    from invariants.cli import SUBCOMMANDS, _split_subcommand

    found, remaining = _split_subcommand(list(argv))
    assert found is (SUBCOMMANDS[command] if command else None)
    assert remaining == rest


def test_a_closed_pipe_ends_quietly(ledger_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANTS_")}
    env["PYTHONPATH"] = str(TESTS)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invariants",
            "--db",
            ledger_db,
            "-p",
            "ledger_rules",
            "-p",
            "no:billing",
            "-vv",
            "--no-history",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line, like `| head -0`
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "internal error" not in err and "Traceback" not in err
