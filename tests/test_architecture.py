"""The package's layering: training never reaches up into publishing, and no import circles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nlp_ssl"
PUBLISHING = {"nlp_ssl.hub", "nlp_ssl.export", "nlp_ssl.model_card"}


def imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nlp_ssl"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nlp_ssl")}
    return found


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def test_training_modules_never_import_publishing():
    training = [*sorted((PACKAGE / "training").glob("*.py")), PACKAGE / "stage.py"]
    reached = {module_name(p): imports(p, module_level_only=False) & PUBLISHING for p in training}
    assert {m: sorted(found) for m, found in reached.items() if found} == {}


def test_no_import_circles():
    graph = {module_name(p): imports(p, module_level_only=True) for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    circles, visiting, done = [], [], set()

    def visit(module):
        if module in visiting:
            circles.append(visiting[visiting.index(module) :] + [module])
            return
        if module in done:
            return
        visiting.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert circles == []
