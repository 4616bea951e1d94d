"""Package-level promises: the public API, the layers (core -> nothing, runtime -> core,
cli -> both), no import cycle, and no module reaching into another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import heph

PACKAGE = Path(heph.__file__).resolve().parent
SPEC_NAMES = {  # SPEC §1-3 and §5: what `from heph import ...` must offer
    "Step", "ASYNC", "Error", "Retry", "Done", "Wait", "WaitForEvent", "Debug", "Workflow", "VersionedWorkflow",
    "Unique", "Dynamic", "Hephaestus", "JsonFileStorage", "use", "on", "HephError", "AlreadyRunning",
    "InstanceNotFound", "NotCancellable", "InvalidEvent", "InvalidId", "WorkflowDefinitionError", "StorageError",
    "Instance", "Storage", "MemoryStorage",
}


def test_version_is_a_string():
    assert heph.__version__.count(".") == 2


def test_the_public_api_offers_the_spec_names_and_each_comes_from_heph():
    assert SPEC_NAMES <= set(heph.__all__)
    for name in heph.__all__:
        value = getattr(heph, name)
        module = getattr(value, "__module__", None) or type(value).__module__
        assert module.startswith("heph."), (name, module)


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_core_and_its_facades_never_load_the_runtime_or_the_cli():
    code = (
        "import sys, heph.core.engine, heph.core.workflow\n"
        "from heph import Done, Step, Workflow, use\n"
        "class Go(Step):\n"
        "    events = ['ok']\n"
        "    def execute(self, instance, config, context):\n"
        "        return 'ok'\n"
        "class Flow(Workflow):\n"
        "    unique = 'k'\n"
        "    start = Go\n"
        "    transitions = {Go: {'ok': Done}}\n"
        "class App:\n"
        "    def start(self, workflow, value, context=None, *, version=None, **options): return value\n"
        "    def resume(self, instance_id, event, data=None, *, step=None, buffer=False, workflow=None): return event\n"
        "    def get(self, instance_id, *, workflow=None): return instance_id\n"
        "    def list(self, *, workflow=None, **filters): return []\n"
        "    def cancel(self, instance_id, *, workflow=None): return instance_id\n"
        "    def retry(self, instance_id, *, workflow=None): return instance_id\n"
        "use(App())\n"
        "assert Flow.start('v1') == 'v1' and Flow.resume('v1', 'e') == 'e' and Flow.get('v1') == 'k::v1'\n"
        "assert Flow.list() == [] and Flow.cancel('v1') == Flow.retry('v1') == 'k::v1'\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('filelock', 'rich', 'typer', 'yaml')\n"
        "         or m.startswith(('heph.runtime', 'heph.cli', 'heph.testing'))]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    assert run_python(code) == ""


def test_the_json_store_loads_no_rich_or_typer():
    code = (
        "import sys, heph\n"
        "heph.Hephaestus(storage=heph.JsonFileStorage('/nonexistent-heph-store'))\n"
        "print(','.join(m for m in ('rich', 'typer', 'yaml', 'heph.cli') if m in sys.modules))\n"
    )
    assert run_python(code) == ""


# -- the import graph, read from the source (imports inside functions included) --------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> list[tuple[str, list[str]]]:
    """(imported heph module, names taken from it) for every import statement of ``name``."""
    tree = ast.parse(MODULES[name].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("heph")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("heph"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, []) if sub in MODULES else (node.module, [alias.name]))
    return found


def test_the_layers_point_one_way():
    rank = {"heph.errors": 0, "heph.core": 1, "heph.runtime": 2, "heph.testing": 3, "heph.otel": 3, "heph.cli": 3}

    def layer(module: str) -> int | None:
        return next((r for prefix, r in rank.items() if module == prefix or module.startswith(prefix + ".")), None)

    wrong = [(name, target) for name in MODULES for target, _ in imports_of(name)
             if layer(name) is not None and layer(target) is not None and layer(target) > layer(name)]
    assert wrong == []


def test_there_is_no_import_cycle_among_heph_modules():
    graph = {name: {t for t, _ in imports_of(name) if t in MODULES and t != name} for name in MODULES}
    graph = {name: {t for t in targets if t != "heph"} for name, targets in graph.items()}  # the package facade
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_imports_another_modules_private_names():
    private = [(name, target, taken) for name in MODULES for target, names in imports_of(name)
               for taken in names if taken.startswith("_") and not taken.startswith("__")]
    assert private == []


def test_no_module_uses_private_attributes_of_a_heph_module_it_imported():
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("heph"):
                aliases |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in MODULES}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.asname and a.name.startswith("heph")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append((name, f"{node.value.id}.{node.attr}"))
    assert found == []
