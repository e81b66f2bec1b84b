"""Discovery through pluggy: entry points, -p, blocking, hook wrappers and registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ledger_rules
import pytest
from sqlalchemy import create_engine, select

from invariants import Outcome, Rule, configure, hookimpl, invariant, run
from invariants.api import selected_rules
from invariants.errors import UsageError
from invariants.plugins import DEFAULT_PLUGINS, get_plugin_manager

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "invariants-example-plugin"
ISOLATED = {"entrypoints": False, "discover": False, "environ": {}}


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a folder of its own (a real distribution)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def cli(*args: str, cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANTS_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "invariants", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_plugin_is_found_without_configuration(installed_example, tmp_path):
    listed = cli("--list", cwd=tmp_path, pythonpath=[installed_example])
    assert listed.returncode == 0, listed.stderr
    assert "inventory.stock_not_negative" in listed.stdout
    assert "billing." in listed.stdout  # the built-in plugin loads through the same group
    plugins = cli("plugins", cwd=tmp_path, pythonpath=[installed_example])
    assert "entry point of invariants-example-plugin" in plugins.stdout
    assert "1.0.0" in plugins.stdout


def test_installed_plugin_checks_and_repairs(installed_example, tmp_path):
    sys.path.insert(0, str(installed_example))
    try:
        import invariants_inventory as inventory
    finally:
        sys.path.remove(str(installed_example))
    url = f"sqlite:///{tmp_path / 'stock.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        inventory.metadata.create_all(conn)
        conn.execute(
            inventory.stock.insert(),
            [
                {"sku": "a", "warehouse_id": 1, "quantity": -2},
                {"sku": "b", "warehouse_id": 2, "quantity": 5},
            ],
        )
    engine.dispose()
    result = cli(
        "--db", url, "--repair", "-k", "inventory", cwd=tmp_path, pythonpath=[installed_example]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REPAIRED (1 row, 1 changed)" in result.stdout


def test_blocking_a_plugin_by_name(installed_example, tmp_path):
    listed = cli("--list", "-p", "no:inventory", cwd=tmp_path, pythonpath=[installed_example])
    assert "inventory." not in listed.stdout
    assert "billing." in listed.stdout


def test_minus_p_loads_a_module_by_path(tmp_path):
    listed = cli("--list", "-p", "ledger_rules", cwd=tmp_path, pythonpath=[Path(__file__).parent])
    assert "ledger.balance_not_negative" in listed.stdout


def test_builtins_register_through_the_same_call_and_can_be_blocked():
    pm = get_plugin_manager(entrypoints=False, blocked=["junit"])
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert {n for n, _ in DEFAULT_PLUGINS} - {"junit"} <= names
    assert "junit" not in names


def test_manager_ignores_attributes_without_the_prefix():
    class Plugin:
        def helper(self):  # not a hook: never validated
            return 1

        def invariants_configure(self, config):  # unmarked, still a hook (pytest does the same)
            config.seen = True

    config = configure(plugins=[Plugin()], **ISOLATED)
    assert config.seen is True


def test_misspelt_hook_fails_at_start():
    class Typo:
        @hookimpl
        def invariants_configur(self, config):
            pass

    with pytest.raises(UsageError, match="invariants_configur"):
        get_plugin_manager(plugins=[Typo()], entrypoints=False)


def test_register_rules_hook_attributes_rules_to_their_plugin():
    @invariant("dynamic.generated", scope_key="owner_id")
    def generated():
        """Built at run time by a factory."""
        return select(ledger_rules.accounts.c.owner_id)

    class Factory:
        @hookimpl
        def invariants_register_rules(self, register, config):
            register(generated)

    config = configure(plugins=[Factory()], **ISOLATED)
    rules = selected_rules(config)
    assert [r.id for r in rules] == ["dynamic.generated"]
    factory = next(p for p in config.pluginmanager.get_plugins() if isinstance(p, Factory))
    assert config.rule_plugins["dynamic.generated"] == config.pluginmanager.get_name(factory)


def test_registering_something_else_is_refused():
    class Bad:
        @hookimpl
        def invariants_register_rules(self, register, config):
            register("not a rule")

    config = configure(plugins=[Bad()], **ISOLATED)
    with pytest.raises(UsageError, match="not a Rule"):
        selected_rules(config)


def test_a_wrapper_sees_every_check_without_touching_the_runner(engine):
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -1)])
    seen: list[tuple[str, int]] = []

    class Timing:
        @hookimpl(wrapper=True)
        def invariants_run_check(self, rule, conn, context):
            result = yield
            seen.append((rule.id, result.count))
            return result

        @hookimpl(wrapper=True)
        def invariants_run_repair(self, rule, conn, violations, context):
            result = yield
            seen.append((f"repair {rule.id}", result.rows_changed))
            return result

    run(
        engine,
        plugins=["ledger_rules", Timing()],
        select=["ledger.balance*"],
        repair=True,
        **ISOLATED,
    )
    assert seen == [("ledger.balance_not_negative", 1), ("repair ledger.balance_not_negative", 1)]


def test_collection_hook_can_deselect(engine):
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -1)])

    class OnlyWarnings:
        @hookimpl
        def invariants_collection_modifyitems(self, config, rules):
            rules[:] = [r for r in rules if str(r.severity) == "warning"]

    report = run(engine, plugins=["ledger_rules", OnlyWarnings()], **ISOLATED)
    assert [r.rule_id for r in report.reports] == ["ledger.owner_named"]


def test_rule_and_session_hooks_are_called(engine):
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -1)])
    calls: list[str] = []

    class Listener:
        @hookimpl
        def invariants_sessionstart(self, session):
            calls.append(f"start {len(session.rules)}")

        @hookimpl
        def invariants_rule_start(self, rule, index, total):
            calls.append(f"begin {rule.id} {index}/{total}")

        @hookimpl
        def invariants_rule_report(self, report):
            calls.append(f"{report.rule_id} {report.outcome}")

        @hookimpl
        def invariants_sessionfinish(self, session, run):
            calls.append(f"finish {run.exit_code}")

        @hookimpl
        def invariants_unconfigure(self, config):
            calls.append("unconfigure")

    config = configure(plugins=["ledger_rules", Listener()], **ISOLATED)
    run(engine, select=["ledger.balance*"], config=config)
    config.hook.invariants_unconfigure(config=config)
    assert calls == [
        "start 1",
        "begin ledger.balance_not_negative 1/1",
        f"ledger.balance_not_negative {Outcome.VIOLATED}",
        "finish 1",
        "unconfigure",
    ]


def test_addoption_and_header_and_rule_line_hooks(tmp_path):
    plugin = tmp_path / "headerplugin.py"
    plugin.write_text(
        "def invariants_addoption(parser):\n"
        "    parser.add_argument('--shout', action='store_true')\n"
        "def invariants_report_header(config):\n"
        "    return 'shouting: ' + str(config.getoption('shout'))\n"
        "def invariants_report_rule_line(report, verbose):\n"
        "    return 'CUSTOM ' + report.rule_id\n"
    )
    db = tmp_path / "l.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, 1)])
    engine.dispose()
    result = cli(
        "--db",
        f"sqlite:///{db}",
        "-p",
        "headerplugin",
        "-p",
        "ledger_rules",
        "-p",
        "no:billing",
        "--shout",
        cwd=tmp_path,
        pythonpath=[tmp_path, Path(__file__).parent],
    )
    assert result.returncode == 0, result.stderr
    assert "shouting: True" in result.stdout
    assert "CUSTOM ledger.balance_not_negative" in result.stdout


def test_rule_objects_are_plain_and_typed():
    rule = ledger_rules.balance_not_negative
    assert isinstance(rule, Rule)
    assert rule.description == "No account has a negative balance."
    assert rule.repair_fn is ledger_rules.zero_negative_balances
    with pytest.raises(ValueError, match="already has a repair"):
        rule.repair(lambda: None)
    with pytest.raises(ValueError, match="dotted"):
        invariant("NoDots")(lambda: None)
