"""No two modules of services/opsmantik/ import each other, directly or around a loop: the graph counts
every import, at module level and inside functions (a deferred import hides a cycle, it does not
remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "opsmantik"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                # `from pkg import mod` imports the module pkg.mod when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[module] |= {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "opsmantik.gateway.state" in graph["opsmantik.gateway.routes_api"]
    assert "opsmantik.gateway.routes_api" in graph["opsmantik.gateway.app"]


def test_detector_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


# The package's layers, bottom up: a module imports only from its own layer or those below.
# Components never import each other, but for the reports that read another area's data.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["opsmantik", "config", "errors", "events", "months", "schema_files", "db", "kafka", "telemetry"], 0
    ),
    "process": 0,  # the long-running processes' start and run until a signal (relay, dispatcher)
    **dict.fromkeys(["sites", "tokens", "portal"], 1),
    "dashboard": 1,  # the dashboard's static assets (no imports); the gateway serves them
    "meters": 1,  # definitions, aggregates, queries: read by the worker, the gateway and the CLI
    "alerts": 1,  # rules, crossings (the worker and voids call them), outbox, dispatcher
    **dict.fromkeys(["gateway", "worker", "relay", "audit", "billing", "sla", "status"], 2),
    **dict.fromkeys(["cli", "devstack", "recovery"], 3),  # recovery drives the stack's Postgres
}
# Components that a component may read (the reports of one area on another's data, shared rules).
ALLOWED = {
    ("gateway", "billing"),  # the dispute export, the billing rules
    ("gateway", "status"),  # /status renders the status page
    ("worker", "billing"),  # the billing rules the ledger applies
    ("sla", "billing"),  # credits are computed on statements
    ("sla", "audit"),  # data loss comes from the capture audit
    ("status", "sla"),  # the page shows the SLO figures
}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "opsmantik"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        for target in targets:
            a, b = _area(module), _area(target)
            if a == b:
                continue
            if LAYERS[b] > LAYERS[a] or (LAYERS[a] == LAYERS[b] == 2 and (a, b) not in ALLOWED):
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_every_area_has_a_layer() -> None:
    assert {_area(m) for m in import_graph()} <= set(LAYERS)


def test_layers_hold() -> None:
    assert layer_violations(import_graph()) == []


def test_gateway_and_worker_never_import_each_other() -> None:
    graph = import_graph()
    crossing = [
        f"{m} -> {t}" for m, ts in graph.items() for t in ts if {_area(m), _area(t)} == {"gateway", "worker"}
    ]
    assert crossing == []


def test_layer_check_finds_planted_violations() -> None:
    planted = {
        "opsmantik.worker.main": {"opsmantik.gateway.app"},
        "opsmantik.config": {"opsmantik.cli.main"},
        "opsmantik.gateway.app": set(),
        "opsmantik.cli.main": set(),
    }
    assert layer_violations(planted) == [
        "opsmantik.config -> opsmantik.cli.main",
        "opsmantik.worker.main -> opsmantik.gateway.app",
    ]
