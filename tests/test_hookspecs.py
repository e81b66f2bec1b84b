"""The hook reference: every hook is documented in hookspecs.py and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from invariants import hookspecs

HOOKS = hookspecs._all_hooks()
TESTS = Path(__file__).parent


def test_there_are_hooks_in_every_phase():
    assert {
        "invariants_addoption",
        "invariants_register_rules",
        "invariants_run_check",
        "invariants_run_repair",
        "invariants_rule_report",
    } <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented(name):
    hook = HOOKS[name]
    doc = inspect.getdoc(hook) or ""
    assert doc, f"{name} has no docstring"
    params = [p for p in inspect.signature(hook).parameters]
    for param in params:
        assert f":param {param}:" in doc, f"{name}: argument {param!r} is not documented"
    assert "return" in doc.lower() or "Return" in doc, f"{name}: return value not documented"
    opts = getattr(hook, "invariants_spec", {})
    if opts.get("firstresult"):
        assert "first non-None result" in doc, f"{name}: firstresult not stated"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_exercised_by_a_test(name):
    users = [
        path.name
        for path in TESTS.glob("test_*.py")
        if path.name != "test_hookspecs.py" and name in path.read_text()
    ]
    assert users, f"no test implements or calls {name}"
