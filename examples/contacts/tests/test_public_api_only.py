"""The example is application code: it imports nothing of the framework but its public API."""

from __future__ import annotations

import ast
from pathlib import Path

import eventpile

EXAMPLE = Path(__file__).resolve().parents[1]
FRAMEWORK = {"eventpile", "domain", "commands", "projections", "store", "tests"}
PUBLIC = {"eventpile", "eventpile.testing"}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every absolute import in a file."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_every_import_of_the_framework_is_public() -> None:
    files = sorted(EXAMPLE.rglob("*.py"))
    assert len(files) > 5
    checked = 0
    for path in files:
        for module, names in imports(path):
            if module.split(".")[0] not in FRAMEWORK:
                continue
            checked += 1
            where = f"{path.relative_to(EXAMPLE)} imports {module}"
            assert module in PUBLIC, where
            if module == "eventpile":
                assert set(names) <= set(eventpile.__all__), where
    assert checked > 0


def test_the_checker_sees_private_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import domain.events\nfrom commands.app import Eventpile\nfrom .x import y\n"
    )
    assert imports(sample) == [("domain.events", []), ("commands.app", ["Eventpile"])]
