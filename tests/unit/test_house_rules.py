"""The house rules of DESIGN.md, held by code: what may import what, and no module state."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
# The simulator plays the engines, so it may speak their names and export their metrics.
SIMULATOR = PACKAGE / "sim"

# What a routing decision may use: pure computation over the backends' state.
ROUTING_MAY_IMPORT = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "math",
    "random",
    "time",
    "typing",
    "gateway.routing",
    "gateway.fleet.registry",
    "gateway.fleet.calibration",
    "gateway.settings",
}
MUTABLE_FACTORIES = {"list", "dict", "set", "bytearray", "deque", "defaultdict", "OrderedDict"}
ENGINE_NAMES = {"vllm", "sglang", "tgi"}
ENGINE_NAMES_MAY_LIVE = (PACKAGE / "fleet" / "adapters", PACKAGE / "settings.py", SIMULATOR)


def modules(under: Path = PACKAGE) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(under.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def allowed(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_routing_imports_no_network_client_nor_anything_with_io() -> None:
    offending = [
        f"{name(path)}: {module}"
        for path, tree in modules(PACKAGE / "routing")
        for module in imported(tree)
        if not allowed(module, ROUTING_MAY_IMPORT)
    ]
    assert offending == []


def test_the_proxy_never_decides_where_a_request_goes() -> None:
    offending = [
        f"{name(path)}: {module}"
        for path, tree in modules(PACKAGE / "proxy")
        for module in imported(tree)
        if allowed(module, {"gateway.routing", "gateway.placement", "gateway.prefix"})
    ]
    assert offending == []


def _mutable(value: ast.expr) -> bool:
    displays = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    if isinstance(value, displays):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        return called in MUTABLE_FACTORIES
    return False


def test_no_module_level_mutable_state() -> None:
    offending = []
    for path, tree in modules():
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names != ["__all__"] and _mutable(value):
                offending.append(f"{name(path)}:{node.lineno} {', '.join(names)}")
        offending += [
            f"{name(path)}:{node.lineno} global"
            for node in ast.walk(tree)
            if isinstance(node, ast.Global)
        ]
    assert offending == []


def test_metrics_live_only_in_the_metrics_module() -> None:
    offending = [
        name(path)
        for path, tree in modules()
        if path != PACKAGE / "metrics.py"
        and not path.is_relative_to(SIMULATOR)
        and any(allowed(m, {"prometheus_client"}) for m in imported(tree))
    ]
    assert offending == []


@pytest.mark.parametrize("engine", sorted(ENGINE_NAMES))
def test_engine_differences_live_only_in_the_adapters(engine: str) -> None:
    offending = [
        f"{name(path)}:{node.lineno}"
        for path, tree in modules()
        if not any(path == p or path.is_relative_to(p) for p in ENGINE_NAMES_MAY_LIVE)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == engine
    ]
    assert offending == []
