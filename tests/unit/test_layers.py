"""Imports point one way.

Between packages: agent -> drivers, policy; drivers and policy never import agent or each other.
Inside agent: each part (a sub-package such as ``agent.store`` or a top-level module such as
``agent.pipeline``) sits on a layer of :data:`LAYERS` and imports only parts on lower layers,
never one on its own layer or above; the service never reaches installer, demo or cloud code;
no two modules import each other, directly or round a longer circle. A function-level import in
the service says why on its own line or the line above (``# lazy: ... (+12 MB)``).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"drivers": {"agent", "policy"}, "policy": {"agent", "drivers"}}

# Lowest first. A part may import parts on lower layers only (docs/architecture.md).
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"errors", "paths", "logs", "failures"},  # kernel: import nothing of agent
    {"wire"},  # keys, envelope, topics, signed commands
    {"config"},  # the TOML schema and loader
    {"host", "store"},  # clock, sd_notify, metrics, backoff, health; outbox, snapshots
    {"pipeline", "uplink", "sources"},
    {"web"},  # the household page
    {"config_checks"},  # the pre-start checks run, check-config, provision and doctor share
    {"daemon", "installer", "cloud"},  # the service; one-shot commands; the cloud end
    {"demo"},
    {"cli"},  # the hems-agent dispatcher (imports its subcommands by name, lazily)
))
LAYER_OF = {part: index for index, layer in enumerate(LAYERS) for part in layer}
SERVICE = {"daemon", "pipeline", "web", "sources", "uplink", "store", "host", "config", "wire",
           "config_checks", "errors", "paths", "logs", "failures"}
NOT_IN_SERVICE = {"installer", "demo", "cloud"}
# The MQTT libraries and the one module that may import them (docs/broker.md, "Where MQTT lives").
MQTT_LIBRARIES = frozenset({"aiomqtt", "paho"})
MQTT_EDGE = "agent.uplink.session"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _mqtt_importers(modules: dict[str, Path]) -> list[str]:
    """The modules that import aiomqtt or paho, at top level or inside a function."""
    return sorted(name for name, path in modules.items() if _imports(path) & MQTT_LIBRARIES)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted((ROOT / "agent").rglob("*.py"))}


def _agent_imports(path: Path) -> Iterator[tuple[ast.stmt, str]]:
    """(import statement, agent module it names) for every import of agent in ``path``;
    ``from agent.x import y`` names ``agent.x.y`` when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "agent":
                    yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "agent":
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                yield node, child if child in MODULES else node.module


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


@functools.cache
def _edges() -> dict[str, set[str]]:
    return {name: {target for _, target in _agent_imports(path) if target != name}
            for name, path in MODULES.items()}


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _layer_offenders(edges: dict[str, set[str]]) -> list[str]:
    offenders = []
    for source, targets in sorted(edges.items()):
        here = _part(source)
        for target in sorted(targets):
            there = _part(target)
            if there != here and LAYER_OF[there] >= LAYER_OF[here]:
                offenders.append(f"{source} imports {target}")
    return offenders


def _unexplained_lazy_imports(path: Path) -> list[int]:
    """Lines of function-level imports with no comment on the line or above their import block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines), filename=str(path))
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if "#" in lines[node.lineno - 1]:
                continue
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1
            if above < 0 or not lines[above].strip().startswith("#"):
                found.add(node.lineno)
    return sorted(found)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards_or_sideways(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for bad in sorted(_imports(path) & FORBIDDEN[package])
    ]
    assert offenders == []


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import agent.cli\nfrom policy import ledger\n", encoding="utf-8")
    assert _imports(sample) == {"agent", "policy"}


def test_every_part_of_agent_has_a_layer() -> None:
    parts = {_part(name) for name in MODULES if name != "agent"}
    assert sorted(parts - set(LAYER_OF)) == [], "add the new part to LAYERS"
    assert sorted(set(LAYER_OF) - parts) == [], "a part in LAYERS no longer exists"


def test_only_the_mqtt_edge_imports_aiomqtt_or_paho() -> None:
    others = [name for name in _mqtt_importers(MODULES) if name != MQTT_EDGE]
    assert others == [], (f"only {MQTT_EDGE} may import aiomqtt or paho; use its Session and "
                          f"catch UplinkError instead in: {', '.join(others)}")
    assert _mqtt_importers({MQTT_EDGE: MODULES[MQTT_EDGE]}) == [MQTT_EDGE]


def test_mqtt_checker_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    top, inner, clean = tmp_path / "top.py", tmp_path / "inner.py", tmp_path / "clean.py"
    top.write_text("import paho.mqtt.client as mqtt\n", encoding="utf-8")
    inner.write_text("def f():\n    from aiomqtt import Client\n", encoding="utf-8")
    clean.write_text("from agent.uplink.session import connect\n", encoding="utf-8")
    assert _mqtt_importers({"a.top": top, "a.inner": inner, "a.clean": clean}) == [
        "a.inner", "a.top"]


def test_agent_imports_only_point_down() -> None:
    assert _layer_offenders(_edges()) == []


def test_no_module_of_agent_imports_itself_round_a_circle() -> None:
    assert _circles(_edges()) == []


def test_the_service_never_reaches_installer_demo_or_cloud_code() -> None:
    edges = _edges()
    reached = {name for name in edges if _part(name) in SERVICE}
    todo = list(reached)
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert sorted(name for name in reached if _part(name) in NOT_IN_SERVICE) == []


def test_function_level_imports_in_the_service_say_why() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in MODULES.items()
                 if _part(name) in SERVICE for line in _unexplained_lazy_imports(path)]
    assert offenders == []


def test_checkers_see_an_upward_import_a_circle_and_an_unexplained_lazy_import(
        tmp_path: Path) -> None:
    edges = {"agent.wire.keys": {"agent.daemon.state"}, "agent.daemon.state": {"agent.wire.keys"},
             "agent.store.outbox": {"agent.errors"},
             "agent.uplink.publisher": {"agent.sources.modbus"}}
    assert _layer_offenders(edges) == ["agent.uplink.publisher imports agent.sources.modbus",
                                       "agent.wire.keys imports agent.daemon.state"]
    assert _circles(edges) == [["agent.daemon.state", "agent.wire.keys"]]
    sample = tmp_path / "lazy.py"
    sample.write_text("def a():\n    # lazy: +3 MB\n    import json\n    import os\n\n\n"
                      "def b():\n    import sys\n    import re  # lazy: measured\n",
                      encoding="utf-8")
    assert _unexplained_lazy_imports(sample) == [8]

