"""The package's shape: the inference path never loads the offline tools, `import
neucomp` stays cheap, and no module imports another that imports it back."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "neucomp"
OFFLINE = ("neucomp.train", "neucomp.data", "neucomp.eval", "neucomp.demo")

_RUN_INFERENCE = """
import json, sys
import numpy as np
import neucomp
assert "torch" not in sys.modules, "import neucomp loaded torch"
import neucomp.cli, neucomp.api, neucomp.batch
audio = np.sin(np.arange(24000, dtype=np.float32) / 10)
for lm in (False, True):
    neucomp.decompress(neucomp.compress(audio, 24000, 3.0, lm=lm))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("neucomp"))))
"""


def test_inference_path_never_imports_offline_tools() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RUN_INFERENCE],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "neucomp.cli" in loaded
    offline = [m for m in loaded if m.startswith(OFFLINE)]
    assert not offline, f"the inference path loaded {offline}"


def _imports(path: Path) -> set[str]:
    """The neucomp modules ``path`` imports, at the top or inside functions (not those
    only under ``if TYPE_CHECKING:``, which never run)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("neucomp")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neucomp"):
            found.add(node.module)
            # `from neucomp.audio import writers` names a module too
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles() -> None:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle of the design.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = stack[stack.index(name) :] + [name]
            raise AssertionError("import cycle: " + " → ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
