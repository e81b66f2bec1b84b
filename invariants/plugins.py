"""The plugin manager: built-in plugins, entry points, ``-p`` modules and blocking."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pluggy

from invariants import hookspecs
from invariants.errors import UsageError

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "InvariantsPluginManager", "get_plugin_manager"]

ENTRY_POINT_GROUP = "invariants"

#: Plugins that make up the tool itself, registered through the same call as anyone's.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("runner", "invariants.runner"),
    ("terminal", "invariants.reporters.terminal"),
    ("json", "invariants.reporters.json"),
    ("junit", "invariants.reporters.junit"),
    ("sentry", "invariants.reporters.sentry"),
)


class InvariantsPluginManager(pluggy.PluginManager):
    """A pluggy manager that only reads ``invariants_*`` attributes of plugins."""

    def __init__(self) -> None:
        super().__init__("invariants")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if not name.startswith("invariants_"):
            return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and inspect.isroutine(getattr(plugin, name, None)):
            return {}
        return opts

    def import_plugin(self, modname: str, *, name: str | None = None, origin: str) -> None:
        """Import ``modname`` and register it, unless blocked; failures name the plugin."""
        name = name or modname
        if self.is_blocked(name) or self.is_blocked(modname) or self.has_plugin(name):
            return
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            raise UsageError(
                f"plugin {name!r} ({origin}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        self.register_named(module, name, origin)

    def register_named(self, plugin: Any, name: str, origin: str) -> None:
        """Register a plugin object, turning pluggy's validation errors into usage errors."""
        try:
            self.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise UsageError(f"plugin {name!r} ({origin}) is invalid: {exc}") from exc
        self.origins[name] = origin

    def load_entrypoint_plugins(self) -> None:
        """Register every plugin installed under the ``invariants`` entry-point group."""
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise UsageError(
                    f"plugin {ep.name!r} (entry point of {dist}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.register_named(plugin, ep.name, f"entry point of {dist}")

    def plugin_listing(self) -> list[tuple[str, str, str, list[str]]]:
        """Name, origin, version and hooks of each registered plugin (for ``plugins``)."""
        rows = []
        for name, plugin in sorted(self.list_name_plugin(), key=lambda np: np[0]):
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            rows.append((name, self.origins.get(name, "?"), _version_of(plugin), hooks))
        return rows


def _version_of(plugin: Any) -> str:
    if isinstance(plugin, ModuleType):
        top = plugin.__name__.split(".")[0]
        for dist in importlib.metadata.packages_distributions().get(top, []):
            return _safe_version(dist)
    return "-"


def _safe_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def get_plugin_manager(
    *,
    plugins: Iterable[str | ModuleType | object] = (),
    blocked: Iterable[str] = (),
    entrypoints: bool = True,
) -> InvariantsPluginManager:
    """A fresh manager with the built-ins, entry points and the given plugins registered.

    ``plugins`` holds module names (``-p`` and config) or plugin objects; ``blocked`` holds
    names from ``-p no:NAME``. Nothing is imported until this is called.
    """
    pm = InvariantsPluginManager()
    for name in blocked:
        pm.set_blocked(name)
    for name, modname in DEFAULT_PLUGINS:
        pm.import_plugin(modname, name=name, origin="built-in")
    if entrypoints:
        pm.load_entrypoint_plugins()
    for plugin in plugins:
        if isinstance(plugin, str):
            pm.import_plugin(plugin, origin="-p / config")
        else:
            name = getattr(plugin, "__name__", None) or repr(plugin)
            pm.register_named(plugin, name, "given")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise UsageError(f"plugin {exc.plugin!r} is invalid: {exc}") from exc
    return pm
