"""The example is application code: it imports nothing of the framework but its public API.

The framework is the ``eventpile`` package (the mail application, ``eventpile.mail``,
is built on it and is not part of its API) and its own test suite, ``tests``. The
names the framework had before it moved into ``eventpile`` (``domain``, ``commands``,
``projections``, ``store``, ``mail``) are refused too: whatever answers to them is
not the framework an application may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventpile

EXAMPLE = Path(__file__).resolve().parents[1]
FRAMEWORK = {"eventpile", "tests"}
"""The top-level names of the framework's modules."""
FORMER = {"domain", "commands", "projections", "store", "mail"}
"""Where the framework's modules were before they moved into ``eventpile``."""
PUBLIC = {
    "eventpile",
    "eventpile.testing",
    "eventpile.testing.postgres",
    "eventpile.testing.sync",
    "eventpile.cli",
}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every absolute import in a file."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def private_imports(path: Path) -> list[str]:
    """The imports of ``path`` that reach past the framework's public API."""
    found = []
    for module, names in imports(path):
        root = module.split(".")[0]
        if root in FORMER:
            found.append(module)
        elif root in FRAMEWORK and (
            module not in PUBLIC
            or (module == "eventpile" and not set(names) <= set(eventpile.__all__))
        ):
            found.append(f"{module}: {', '.join(names)}" if names else module)
    return found


def test_every_import_of_the_framework_is_public() -> None:
    files = sorted(EXAMPLE.rglob("*.py"))
    assert len(files) > 5
    checked = 0
    for path in files:
        checked += sum(m.split(".")[0] in FRAMEWORK for m, _ in imports(path))
        assert private_imports(path) == [], path.relative_to(EXAMPLE)
    assert checked > 0


def test_the_checker_sees_private_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import eventpile.domain.events\n"
        "from eventpile.commands.app import Application\n"
        "from eventpile.mail.app import MailApplication\n"
        "import eventpile.mail\n"
        "from eventpile import Application, MailApplication\n"
        "from tests.strategies import addresses\n"
        "from domain.events import DomainEvent\n"
        "import store\n"
        "from eventpile import Command, handles\n"
        "from eventpile.testing import given\n"
        "from eventpile.cli import main\n"
        "import eventpile\n"
        "from .x import y\n"
        "import pydantic\n"
    )
    assert private_imports(sample) == [
        "eventpile.domain.events",
        "eventpile.commands.app: Application",
        "eventpile.mail.app: MailApplication",
        "eventpile.mail",
        "eventpile: Application, MailApplication",
        "tests.strategies: addresses",
        "domain.events",
        "store",
    ]
