"""The package's layout contract (CONTRIBUTING.md, "Layout and the stage order"): a module imports
only from its own stage, an earlier stage or the bottom layer; a rule's code hash covers what its
jobs import."""

from __future__ import annotations

import ast
from pathlib import Path

import cropchain
from cropchain.workflow import _imported_modules, code_hash

PACKAGE = Path(cropchain.__file__).parent

#: order of the chain: a module may import a folder of its rank or lower
RANK = {
    "errors": 0,
    "log": 0,
    "nomenclature": 0,
    "metrics": 0,
    "provenance": 0,
    "io": 0,
    "sources": 1,
    "series": 2,
    "reference": 3,
    "models": 4,
    "learning": 5,
    "mapping": 6,
    "assessment": 7,
    "parcels": 8,
    "delineation": 8,
    "config": 9,
    "workflow": 9,
    "demo": 9,
}


def _unit(module: str) -> str:
    """``cropchain.series.gapfill`` -> ``series``; ``cropchain.metrics`` -> ``metrics``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cropchain."):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("cropchain.")]
    return found


def test_every_module_has_a_rank():
    units = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set(RANK), sorted(units - set(RANK) - {"__init__"})


def test_no_module_imports_a_later_stage():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = path.relative_to(PACKAGE).with_suffix("").parts[0]
        for module in _imports(path):
            if RANK[_unit(module)] > RANK.get(me, 0):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, wrong


def test_code_hash_follows_imports_into_other_subpackages():
    """The gap filling rule names cropchain.series.temporal; the hash must cover what it imports,
    down to the bottom layer's date reader (cropchain.io.raster)."""
    files = {p.relative_to(PACKAGE).as_posix() for p in _imported_modules(PACKAGE / "series" / "temporal.py")}
    assert {"series/gapfill.py", "series/composite.py"} <= files
    closure, todo = set(), [PACKAGE / "series" / "temporal.py"]
    while todo:
        p = todo.pop()
        if p not in closure:
            closure.add(p)
            todo += _imported_modules(p)
    assert PACKAGE / "io" / "raster.py" in closure
    assert PACKAGE / "series" / "features.py" not in closure  # not run by gap filling
    assert len(code_hash("cropchain.series.temporal")) == 16
    assert code_hash("cropchain.series.temporal") != code_hash("cropchain.series.composite")
