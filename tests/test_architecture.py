"""The package's layers (docs/design.md §3): each module imports only from its own layer or
the layers below it, function-level imports included (they once hid a package cycle), and
every deprecation alias that breaks the order on purpose warns when used."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "equivlib"

# lowest first; a module may import from its own rank and the ranks below it
LAYERS: list[tuple[str, ...]] = [
    ("groups", "_deprecation"),
    ("layers",),
    ("exactness",),
    ("tracer", "tracer_rules", "checks", "export"),
    ("models",),
    ("data", "store", "progress", "plots"),
    ("engine",),
    ("experiments",),
    ("cli", "__main__", "train"),
]
RANK = {top: rank for rank, tops in enumerate(LAYERS) for top in tops}

# old import paths kept for one release: they re-export from their new home, which may sit
# above them, and must warn (tested below)
DEPRECATED_ALIASES = {
    "equivlib.engine.cli": "equivlib.cli",
    "equivlib.engine.sync_batchnorm": "equivlib.layers",
    "equivlib.engine.trained": "equivlib.engine.restore",
    "equivlib.experiments.params": "equivlib.experiments.notebook_params",
    "equivlib.experiments.protocols": "equivlib.experiments.recipes",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_module(name: str, modules: dict[str, Path]) -> bool:
    return name in modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every equivlib module ``name`` imports, at any depth of its code (relative imports
    resolved; ``from equivlib import plots`` counts as the module ``equivlib.plots``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("equivlib"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("equivlib"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _is_module(sub, modules) else base)
    return found


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root (public API)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({_top(m) for m in _modules()} - set(RANK) - {None})
    assert not unplaced, f"modules outside docs/design.md §3's layers: {unplaced}"


def upward_imports() -> list[str]:
    modules = _modules()
    bad = []
    for name, path in modules.items():
        top = _top(name)
        if top is None or name in DEPRECATED_ALIASES:
            continue
        for target in sorted(imports_of(name, path, modules)):
            target_top = _top(target)
            if target_top is None:  # `import equivlib` / `from equivlib import P4`
                bad.append(f"{name} imports the package root (import the module instead)")
            elif RANK[target_top] > RANK[top]:
                bad.append(f"{name} (layer {top}) imports {target} (layer {target_top})")
    return bad


def test_no_module_imports_a_layer_above_it() -> None:
    assert upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The import walk finds function-level and relative imports (so the test above can
    fail): the engine's old CLI imported the experiments inside functions."""
    modules = {"equivlib.engine.x": tmp_path / "x.py", "equivlib.experiments.rotation": Path()}
    source = ("def f():\n    from equivlib.experiments import rotation\n"
              "    from ..experiments.rotation import NotebookGrid\n")
    (tmp_path / "x.py").write_text(source)
    found = imports_of("equivlib.engine.x", tmp_path / "x.py", modules)
    assert found == {"equivlib.experiments.rotation"}
    assert RANK[_top("equivlib.experiments.rotation")] > RANK[_top("equivlib.engine.x")]


@pytest.mark.parametrize("old", sorted(DEPRECATED_ALIASES))
def test_deprecated_alias_warns(old: str) -> None:
    if old not in _modules():
        pytest.fail(f"{old} is listed as an alias but does not exist")
    new = importlib.import_module(DEPRECATED_ALIASES[old])
    moved = [n for n, v in vars(new).items() if not n.startswith("_")
             and getattr(v, "__module__", "").startswith(DEPRECATED_ALIASES[old])]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)  # a shim warns here, a PEP 562 alias on use
        assert any(hasattr(module, n) for n in moved), f"{old} gives none of {moved}"
    assert any(issubclass(w.category, DeprecationWarning) and DEPRECATED_ALIASES[old] in
               str(w.message) for w in caught), \
        f"importing {old} gave no DeprecationWarning naming {DEPRECATED_ALIASES[old]}"


def test_no_function_shadows_a_submodule() -> None:
    """``import equivlib.X as m`` must give the module X, never a function of that name."""
    import equivlib

    for name in _modules():
        if name.count(".") != 1:
            continue
        attr = getattr(equivlib, name.split(".")[1], None)
        assert attr is None or isinstance(attr, type(equivlib)), \
            f"equivlib.{name.split('.')[1]} is {type(attr).__name__}, not the module"
