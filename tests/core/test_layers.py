"""The package's layers (docs/code.md): nothing below imports from above.

Each top-level part of ``src/mliplake`` has a rank; a module may import (at run time: imports under
``TYPE_CHECKING`` are annotations only) its own part and parts of lower rank. The interfaces (cli,
server, web) may use the whole library and never each other, except that the server serves the
portal's pages (web) and those pages' routes use the server's session cookie and problem documents.
"""
from __future__ import annotations

import ast
from pathlib import Path

import mliplake

SRC = Path(mliplake.__file__).resolve().parent
RANK = {
    "core": 0, "settings": 0, "client": 0,
    "access": 1, "readers": 1, "filters": 1,
    "accounts": 2, "storage": 2,
    "query": 3, "search": 4, "catalogue": 5,
    "ingest": 6,  # retraction removes rows from the search index and the catalogue as well
    "ml": 7,
    "lake": 8,  # the facade composes every layer below it
}
INTERFACES = {"cli": set(), "server": {"web"}, "web": {"server"}}
EXCEPTIONS = {("ml", "lake"): "load_calculator opens the default lake when it is given none"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    annotation_only = {id(n) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mliplake":
            if node.module == "mliplake":
                found += [(node.lineno, f"mliplake.{a.name}") for a in node.names if a.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mliplake"]
    return found


def _allowed(importer: str, imported: str) -> bool:
    if importer == imported or importer == "__init__" or (importer, imported) in EXCEPTIONS:
        return True
    if importer in INTERFACES:
        return imported not in INTERFACES or imported in INTERFACES[importer]
    return imported in RANK and RANK[imported] < RANK[importer]


def test_every_part_of_the_package_has_a_place_in_the_layers():
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__pycache__"}
    assert parts - {"__init__"} <= set(RANK) | set(INTERFACES), "a new part of the package needs a rank here"


def test_no_layer_imports_from_a_layer_above_it():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        importer = _part(module)
        for line, name in _runtime_imports(path):
            if not _allowed(importer, _part(name)):
                upward.append(f"{path.relative_to(SRC.parent)}:{line} ({importer}) imports {name}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
