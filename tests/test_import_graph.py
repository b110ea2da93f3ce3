"""The apps' boundaries, read from the code (DESIGN.md "Layout").

Every module of every app is parsed (its imports at the top AND inside functions, which Python only
runs later, so a lazy import hides nothing here), and:

- dependencies point one way: accounts <- audiences <- deliveries <- tracking <- kpis <- system
  <- ops <- api (config, the project, sits on top): no module imports a module of an app above its own;
- no modules import each other in a circle, directly or through others (within an app, the
  staircase: tasks on top of services and the engine, which enqueue by name through
  deliveries/queue.py; across apps the first rule already forbids it).

Issue 16: before, deliveries' services, sending and tasks imported each other in a circle held
together by 14 imports inside functions, and kpis' and audiences' services imported their tasks.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = ["accounts", "audiences", "deliveries", "tracking", "kpis", "system", "ops", "api", "config"]
RANK = {app: i for i, app in enumerate(STACK)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for app in STACK:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(project module imported, line) for every import in the module, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `a.b.name` imports the module `a.b`
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


def graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    return {name: dict(imports_of(name, path, modules)) for name, path in modules.items()}


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, {}))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_walk_sees_every_app_and_the_imports_inside_functions():
    edges = graph()
    assert {name.split(".")[0] for name in edges} == set(STACK)
    # deliveries' tasks import its services and engine; kpis' app config imports deliveries' hook in ready()
    assert {"deliveries.services", "deliveries.sending"} <= set(edges["deliveries.tasks"])
    assert "deliveries.hooks" in edges["kpis.apps"]


def test_no_module_imports_one_of_an_app_above_its_own():
    upward = [
        f"{name}:{line} imports {target}"
        for name, targets in graph().items()
        for target, line in targets.items()
        if RANK[target.split(".")[0]] > RANK[name.split(".")[0]]
    ]
    assert upward == [], "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    found = cycles(graph())
    assert found == [], "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_circle_through_others():
    edges = {"a.tasks": {"a.services": 1}, "a.services": {"a.queue": 1}, "a.queue": {"a.tasks": 1}, "a.models": {}}
    assert cycles(edges) == [["a.queue", "a.services", "a.tasks"]]
    assert cycles({"a.tasks": {"a.services": 1}, "a.services": {"a.queue": 1}, "a.queue": {}}) == []
