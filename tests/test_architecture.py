"""The package's layering: no import cycles (imports inside functions included), function-local imports only
for optional dependencies, no private name imported across packages, every public name where it is."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import qucnn

PACKAGE = Path(qucnn.__file__).parent
#: Optional dependencies, imported where they are used so that ``import qucnn`` needs none of them.
OPTIONAL = {"matplotlib", "qiskit", "qiskit_aer", "qiskit_ibm_runtime", "qiskit_machine_learning", "pennylane",
            "triton"}
#: Our modules that import an optional dependency at their top, and so are themselves imported where used.
OPTIONAL_GATES = ("qucnn.qiskit", "qucnn.backends.triton")
#: The layers, lowest first: a module may import from its own layer and the ones before it.
#: ``qiskit`` (circuit export, noise models, resources) sits beside ``backends``; its executor, which runs a
#: layer's forward and gradients on a sampler, sits with ``nn``.
LAYERS = [("utils",), ("core",), ("backends", "qiskit"), ("nn", "qiskit.executor"), ("datasets",),
          ("train", "experiments", "analysis", "bench", "testing"), ("cli", "__main__")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for every import of ``path``."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in local, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import x" imports the submodule x (its package is imported first, as for every submodule)
            subs = [f"{target}.{a.name}" for a in node.names]
            subs = [s for s in subs if (PACKAGE.parent / Path(*s.split("."))).with_suffix(".py").exists()
                    or (PACKAGE.parent / Path(*s.split(".")) / "__init__.py").exists()]
            found += [(s, id(node) in local, node.lineno) for s in subs] or [(target, id(node) in local, node.lineno)]
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        edges[module_name(path)] = {m for m, _, _ in imports(path) if m.startswith("qucnn")}
    return edges


def test_no_import_cycles_counting_function_local_imports():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is not a cycle unless a submodule imports it back
    real = [c for c in cycles if not all(a.startswith(b) or b.startswith(a) for a, b in zip(c, c[1:]))]
    assert real == [], f"import cycles: {real}"


def test_function_local_imports_only_for_optional_dependencies():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for target, local, line in imports(path):
            if local and target.split(".")[0] not in OPTIONAL and not target.startswith(OPTIONAL_GATES):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert offenders == []


def _layer_of(module: str) -> int:
    rest = module.split(".", 1)[1] if "." in module else ""
    best, where = "", -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (rest == name or rest.startswith(name + ".")) and len(name) > len(best):
                best, where = name, i
    return where  # -1: the package itself, functional


def test_layers_import_only_downwards():
    wrong = []
    for module, targets in graph().items():
        here = _layer_of(module)
        if here < 0:
            continue
        for target in targets:
            there = _layer_of(target)
            if there > here:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_public_names_import_from_the_same_place():
    for name in ["FilterAnsatz", "GRADIENT_MODES", "QuConv2d", "QuantumCost", "amplitude_encode", "mottonen_ops",
                 "state_preparation_ops", "svd_unitary", "swap_test", "swap_test_circuit", "swap_test_ops",
                 "__version__"]:
        assert hasattr(qucnn, name) and name in qucnn.__all__
    from qucnn import qiskit as qq
    for name in ["MISSING", "OVERLAPS", "QiskitExecutor", "RESOURCE_BASIS", "circuit_resources", "default_noise_model",
                 "example_circuits", "filter_circuit", "from_little_endian", "ops_to_circuit", "ops_to_template",
                 "overlap_ops", "sample_swap_tests", "state_preparation_circuit", "swap_test_circuit",
                 "to_little_endian"]:
        assert name in qq.__all__ and getattr(qq, name) is not None


def _package(module: str) -> str:
    """The top-level subpackage (or module) of ``qucnn`` that ``module`` belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2])


def private_imports() -> list[str]:
    """``from qucnn.X import _name`` where the importer is not in ``qucnn.X``'s top-level package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        here = module_name(path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("qucnn") or _package(target) == _package(here):
                continue
            found += [f"{here} imports {a.name} from {target}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_is_imported_across_packages():
    assert private_imports() == []


def test_old_module_paths_are_gone():
    for old in ("qucnn.layer", "qucnn.gates", "qucnn.training", "qucnn._compat", "qucnn.backends.windows",
                "qucnn.backends.fused_fidelity"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


#: Modules stay a few hundred lines and functions about a screen (docstring included).
MODULE_LINES, FUNCTION_LINES = 350, 70


def oversized() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            found.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_modules_and_functions_stay_small():
    assert oversized() == []
