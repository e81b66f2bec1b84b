"""Collection: gather rules from plugins, select them, and order them by their dependencies."""

from __future__ import annotations

import fnmatch
import graphlib
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from _pytest.mark.expression import Expression

from invariants.errors import UsageError
from invariants.rule import Rule

if TYPE_CHECKING:
    from invariants.config import Config

__all__ = ["collect_rules", "order_by_dependencies", "select_rules"]


def collect_rules(config: Config) -> dict[str, Rule]:
    """Every registered rule by id, each tagged with the plugin that gave it.

    Rules come from module attributes of plugin modules and from the
    ``invariants_register_rules`` hook; one id from two places is a usage error.
    """
    found: dict[str, Rule] = {}
    origin: dict[str, str] = {}
    pm = config.pluginmanager

    def registrar(plugin_name: str) -> Callable[[Rule], None]:
        def register(rule: Rule) -> None:
            if not isinstance(rule, Rule):
                raise UsageError(f"plugin {plugin_name!r} registered {rule!r}, which is not a Rule")
            if rule.id in found and found[rule.id] is not rule:
                raise UsageError(
                    f"duplicate invariant id {rule.id!r}: "
                    f"defined by plugin {origin[rule.id]!r} and by plugin {plugin_name!r}"
                )
            found[rule.id] = rule
            origin.setdefault(rule.id, plugin_name)

        return register

    for name, plugin in pm.list_name_plugin():
        if isinstance(plugin, ModuleType):
            register = registrar(name)
            for value in vars(plugin).values():
                if isinstance(value, Rule):
                    register(value)
    for impl in pm.hook.invariants_register_rules.get_hookimpls():
        impl.function(register=registrar(impl.plugin_name), config=config)
    config.rule_plugins = origin
    return found


def _keyword_matcher(rule: Rule) -> Callable[..., bool]:
    names = [rule.id.lower(), *(t.lower() for t in rule.tags)]

    def match(word: str, **_: object) -> bool:
        word = word.lower()
        return any(word in name for name in names)

    return match


def select_rules(
    rules: Iterable[Rule],
    *,
    patterns: Sequence[str] = (),
    select: Sequence[str] = (),
    deselect: Sequence[str] = (),
    keyword: str | None = None,
    tags: Sequence[str] = (),
) -> list[Rule]:
    """The rules a run executes, in registration order.

    ``patterns`` (positional arguments) and ``select`` are glob patterns over ids,
    ``deselect`` removes, ``keyword`` is a pytest ``-k`` expression over ids and tags, and
    ``tags`` keeps rules carrying any of them.
    """
    expression = None
    if keyword:
        try:
            expression = Expression.compile(keyword)
        except SyntaxError as exc:
            raise UsageError(f"-k {keyword!r}: {exc.msg}") from None
    chosen = []
    for rule in rules:
        if patterns and not _matches_any(rule.id, patterns):
            continue
        if select and not _matches_any(rule.id, select):
            continue
        if deselect and _matches_any(rule.id, deselect):
            continue
        if tags and not rule.tags.intersection(tags):
            continue
        if expression is not None and not expression.evaluate(_keyword_matcher(rule)):
            continue
        chosen.append(rule)
    return chosen


def _matches_any(rule_id: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rule_id, p) or rule_id == p for p in patterns)


def order_by_dependencies(rules: Sequence[Rule], known: Iterable[str]) -> list[Rule]:
    """The rules with every dependency before its dependents; a cycle is a usage error."""
    known_ids = set(known)
    by_id = {r.id: r for r in rules}
    position = {r.id: i for i, r in enumerate(rules)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for rule in rules:
        for dep in rule.depends_on:
            if dep not in known_ids:
                raise UsageError(f"invariant {rule.id!r} depends on unknown invariant {dep!r}")
        sorter.add(rule.id, *(d for d in rule.depends_on if d in by_id))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise UsageError(f"invariant dependencies form a cycle: {cycle}") from None
    ordered: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        ordered.extend(ready)
        sorter.done(*ready)
    return [by_id[i] for i in ordered]
