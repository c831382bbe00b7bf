"""The direction of imports between the framework's layers and the mail application.

The framework is ``domain/``, ``projections/``, ``commands/``, ``store/`` and the
modules of ``eventpile/`` (its public API: ``eventpile``, ``eventpile.cli``,
``eventpile.testing``); the layer folders are imported as ``eventpile.<layer>``
through the symlinks in ``eventpile/``, and the mail application (``mail/``) as
``eventpile.mail``. Every import of every module of the repository is read with
``ast`` (absolute and relative ones, those inside functions and under
``if TYPE_CHECKING``, and ``import_module("…")`` / ``__import__("…")`` calls with a
literal name), resolved to the absolute module it reaches, and checked:

* the framework imports nothing of the mail application, of ``examples`` or ``tests``;
* ``domain`` imports nothing of ours but itself; ``store`` only itself and ``domain``;
  ``projections`` only itself, ``domain`` and ``store``;
* nothing imports the bare names the layers had before they moved into ``eventpile``
  (``domain``, ``commands``, ``projections``, ``store``, ``mail``): whatever answers to
  them is not the framework (an application's own ``domain`` package, say);
* the mail application uses the framework through its public modules alone.

A string that names a module is not an import (``topic_aliases``, a sample file's text).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ("domain", "projections", "commands", "store")
"""The framework's layer folders, at the top of the repository."""
APPLICATION = "mail"
"""The mail application's folder (``eventpile.mail``)."""
FORMER = frozenset({*LAYERS, APPLICATION})
"""Top-level names nothing may import: the folders are packaged as ``eventpile.<name>``."""
OURS = frozenset({"eventpile", "examples", "tests", *FORMER})
"""The top-level names of the repository's own modules (the rest is third-party)."""
PUBLIC = frozenset(
    {"eventpile", "eventpile.cli", "eventpile.testing", "eventpile.testing.postgres"}
)
"""The framework's public modules: what an application (the mail one too) may import."""
IGNORED = frozenset(
    {".git", ".venv", "build", "__pycache__", ".mypy_cache", ".ruff_cache", ".hypothesis"}
)
"""Folders that hold no module of the repository (as in ``.gitignore``)."""


@dataclass(frozen=True)
class Import:
    """One imported module (or one name of a ``from`` import) of one file."""

    file: str
    """The file, relative to the repository."""
    line: int
    statement: str
    """The import as written (one name of it)."""
    module: str
    """The absolute module it reaches (``from P import m`` reaches ``P.m`` if that is a module)."""
    name: str = ""
    """For ``from P import name`` where ``P.name`` is no module: ``name``."""

    def __str__(self) -> str:
        resolved = f"  [{self.module}]" if self.statement.startswith("from .") else ""
        return f"{self.file}:{self.line}: {self.statement}{resolved}"


def python_files(root: Path) -> list[Path]:
    """The repository's own ``.py`` files, each once (symlinked folders are not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED and not d.endswith(".egg-info"))
        found += [Path(folder, f) for f in sorted(files) if f.endswith(".py")]
    return found


def module_name(path: Path, root: Path) -> str:
    """The name a file is imported as: ``domain/events.py`` is ``eventpile.domain.events``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in FORMER:
        parts.insert(0, "eventpile")
    return ".".join(parts)


def known_modules(root: Path) -> frozenset[str]:
    """Every module and package of the repository (packages without ``__init__`` too)."""
    names = set()
    for path in python_files(root):
        parts = module_name(path, root).split(".")
        names.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return frozenset(names)


def public_names(root: Path) -> frozenset[str]:
    """``eventpile.__all__`` read from the source: the names ``from eventpile import`` takes."""
    tree = ast.parse((root / "eventpile" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("eventpile/__init__.py has no __all__")


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of ``level`` dots starts from, in ``module``."""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    if level - 1 >= len(parts):
        raise ValueError(f"a relative import of {level} dots goes beyond the top of {module}")
    return ".".join(parts[: len(parts) - (level - 1)])


_DYNAMIC = frozenset({"import_module", "__import__"})


def imports(path: Path, root: Path, known: frozenset[str] = frozenset()) -> list[Import]:
    """Every import of the file at ``path``, anywhere in it, resolved to absolute modules."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    file = path.relative_to(root).as_posix()
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                Import(file, node.lineno, f"import {alias.name}", alias.name)
                for alias in node.names
            ]
        elif isinstance(node, ast.ImportFrom):
            written = "." * node.level + (node.module or "")
            if node.level:
                base = _base(module, is_package, node.level)
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                statement = f"from {written} import {alias.name}"
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    found.append(Import(file, node.lineno, statement, submodule))
                else:
                    found.append(Import(file, node.lineno, statement, source, alias.name))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC)
                or (isinstance(node.func, ast.Attribute) and node.func.attr in _DYNAMIC)
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            name = node.args[0].value
            call = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            found.append(Import(file, node.lineno, f"{call}({name!r})", name))
    return sorted(found, key=lambda i: i.line)  # ast.walk goes breadth first


def top(module: str) -> str:
    return module.partition(".")[0]


def within(module: str, *packages: str) -> bool:
    """Is ``module`` one of ``packages`` or inside one?"""
    return any(module == p or module.startswith(p + ".") for p in packages)


def ours(module: str) -> bool:
    return top(module) in OURS


# the rules: each gives the imports of the repository at ``root`` that break it


def scan(root: Path, where: Callable[[str], bool]) -> Iterator[Import]:
    """The imports of the files (paths relative to ``root``, as posix) that ``where`` selects."""
    known = known_modules(root)
    for path in python_files(root):
        if where(path.relative_to(root).as_posix()):
            yield from imports(path, root, known)


def in_folder(*folders: str) -> Callable[[str], bool]:
    """Is a file (a path relative to the repository) in one of these top-level folders?"""
    return lambda file: file.split("/")[0] in folders


in_framework = in_folder(*LAYERS, "eventpile")
"""The framework's files: its layers' and those of ``eventpile/`` (its public modules)."""


def framework_reaching_application(root: Path) -> list[Import]:
    """The framework's imports of the mail application, ``examples`` or ``tests``."""
    return [
        i
        for i in scan(root, in_framework)
        if within(i.module, "eventpile.mail", APPLICATION, "examples", "tests")
    ]


def outside(root: Path, folder: str, *allowed: str) -> list[Import]:
    """The imports of ours in ``folder`` that reach beyond the ``allowed`` packages."""
    return [
        i
        for i in scan(root, in_folder(folder))
        if ours(i.module) and not within(i.module, *allowed)
    ]


def bare_names(root: Path) -> list[Import]:
    """The imports, anywhere, of ``domain``, ``commands``, … not through ``eventpile.``."""
    return [i for i in scan(root, lambda file: True) if top(i.module) in FORMER]


def application_past_public_api(root: Path) -> list[Import]:
    """The mail application's imports of the framework other than its public API."""
    names = public_names(root)
    found = []
    for i in scan(root, in_folder(APPLICATION)):
        if not ours(i.module) or within(i.module, "eventpile.mail"):
            continue
        public = i.module in PUBLIC and (
            i.name in names if i.module == "eventpile" and i.name else not i.name.startswith("_")
        )
        if not public:
            found.append(i)
    return found


def report(found: Iterable[Import]) -> str:
    return "\n".join(map(str, found))


# the tree ----------------------------------------------------------------------


def test_the_tree_is_read() -> None:
    """The checks below see the whole tree: every layer, the application, examples, tests."""
    files = {path.relative_to(ROOT).parts[0] for path in python_files(ROOT)}
    assert {*LAYERS, APPLICATION, "eventpile", "examples", "tests"} <= files
    known = known_modules(ROOT)
    assert {"eventpile.domain.events", "eventpile.mail.cli", "eventpile.commands.app"} <= known
    assert "domain" not in known and "eventpile.eventpile" not in known
    # the folders are read where they are, not a second time through eventpile/'s symlinks
    symlinks = {p.name for p in (ROOT / "eventpile").iterdir() if p.is_symlink()}
    assert symlinks == FORMER
    twice = [
        p
        for p in python_files(ROOT)
        if p.relative_to(ROOT).parts[:2] in {("eventpile", name) for name in symlinks}
    ]
    assert not twice


def test_the_framework_imports_nothing_of_the_mail_application() -> None:
    found = framework_reaching_application(ROOT)
    assert not found, "the framework imports the mail application, examples or tests:\n" + report(
        found
    )


def test_domain_imports_only_itself() -> None:
    found = outside(ROOT, "domain", "eventpile.domain")
    assert not found, "domain/ imports beyond eventpile.domain:\n" + report(found)


def test_store_imports_only_itself_and_domain() -> None:
    found = outside(ROOT, "store", "eventpile.store", "eventpile.domain")
    assert not found, "store/ imports beyond eventpile.store, eventpile.domain:\n" + report(found)


def test_projections_import_only_themselves_domain_and_store() -> None:
    allowed = ("eventpile.projections", "eventpile.domain", "eventpile.store")
    found = outside(ROOT, "projections", *allowed)
    assert not found, f"projections/ imports beyond {', '.join(allowed)}:\n" + report(found)


def test_nothing_imports_the_bare_layer_names() -> None:
    found = bare_names(ROOT)
    assert not found, (
        "imports of domain, commands, projections, store or mail not through eventpile.:\n"
        + report(found)
    )


def test_the_mail_application_uses_only_the_public_api() -> None:
    found = application_past_public_api(ROOT)
    assert not found, f"mail/ imports the framework past {', '.join(sorted(PUBLIC))}:\n" + report(
        found
    )


# the checker -------------------------------------------------------------------


def plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def statements(found: Iterable[Import]) -> list[str]:
    return [f"{i.file}:{i.line}: {i.statement} -> {i.module}" for i in found]


def test_the_checker_sees_planted_violations(tmp_path: Path) -> None:
    plant(
        tmp_path,
        {
            "eventpile/__init__.py": '__all__ = ["Home", "cli"]\n',
            "eventpile/cli.py": "",
            "domain/__init__.py": "",
            "domain/events.py": (
                "from typing import TYPE_CHECKING\n"
                "import pydantic\n"
                "from . import aggregate\n"  # itself: allowed
                "from ..store import keys\n"  # 4
                "if TYPE_CHECKING:\n"
                "    from eventpile.store.views import ViewDB\n"  # 6
                "def later():\n"
                "    import domain.aggregate\n"  # 8
                "    from eventpile import mail\n"  # 9
                "    import importlib\n"
                "    importlib.import_module('eventpile.commands.app')\n"  # 11
                "TEXT = 'import store'\n"  # a string: no import
            ),
            "domain/aggregate.py": "from .events import later\n",
            "store/__init__.py": "",
            "store/keys.py": (
                "from eventpile.domain.events import later\n"
                "from tests.strategies import events\n"  # 2
                "from eventpile.mail.app import MailApplication\n"  # 3
            ),
            "projections/__init__.py": "",
            "projections/db.py": (
                "from eventpile.store import keys\nfrom eventpile.commands import app\n"  # 2
            ),
            "commands/__init__.py": "",
            "commands/app.py": "from examples.contacts import AddressBook\n",  # 1
            "mail/app.py": (
                "from eventpile import Home, cli\n"
                "from eventpile.cli import main\n"
                "from .cli import run\n"
                "from eventpile.mail import cli\n"
                "from eventpile.commands.app import Application\n"  # 5
                "from eventpile import Application\n"  # 6: not in __all__
                "from eventpile.cli import _secret\n"  # 7
                "import commands.app\n"  # 8
            ),
            "mail/cli.py": "def run(): ...\n",
            "tests/test_x.py": "from store import keys\nfrom eventpile.store import keys\n",
            "examples/app/main.py": "from .domain import Thing\nfrom domain import Thing\n",
            "examples/app/domain.py": "Thing = 1\n",
        },
    )
    known = known_modules(tmp_path)
    assert "eventpile.mail" in known and "eventpile.mail.app" in known
    assert statements(imports(tmp_path / "domain/events.py", tmp_path, known)) == [
        "domain/events.py:1: from typing import TYPE_CHECKING -> typing",
        "domain/events.py:2: import pydantic -> pydantic",
        "domain/events.py:3: from . import aggregate -> eventpile.domain.aggregate",
        "domain/events.py:4: from ..store import keys -> eventpile.store.keys",
        "domain/events.py:6: from eventpile.store.views import ViewDB -> eventpile.store.views",
        "domain/events.py:8: import domain.aggregate -> domain.aggregate",
        "domain/events.py:9: from eventpile import mail -> eventpile.mail",
        "domain/events.py:10: import importlib -> importlib",
        "domain/events.py:11: import_module('eventpile.commands.app') -> eventpile.commands.app",
    ]
    assert statements(framework_reaching_application(tmp_path)) == [
        "commands/app.py:1: from examples.contacts import AddressBook -> examples.contacts",
        "domain/events.py:9: from eventpile import mail -> eventpile.mail",
        "store/keys.py:2: from tests.strategies import events -> tests.strategies",
        "store/keys.py:3: from eventpile.mail.app import MailApplication -> eventpile.mail.app",
    ]
    assert statements(outside(tmp_path, "domain", "eventpile.domain")) == [
        "domain/events.py:4: from ..store import keys -> eventpile.store.keys",
        "domain/events.py:6: from eventpile.store.views import ViewDB -> eventpile.store.views",
        "domain/events.py:8: import domain.aggregate -> domain.aggregate",
        "domain/events.py:9: from eventpile import mail -> eventpile.mail",
        "domain/events.py:11: import_module('eventpile.commands.app') -> eventpile.commands.app",
    ]
    assert statements(outside(tmp_path, "store", "eventpile.store", "eventpile.domain")) == [
        "store/keys.py:2: from tests.strategies import events -> tests.strategies",
        "store/keys.py:3: from eventpile.mail.app import MailApplication -> eventpile.mail.app",
    ]
    allowed = ("eventpile.projections", "eventpile.domain", "eventpile.store")
    assert statements(outside(tmp_path, "projections", *allowed)) == [
        "projections/db.py:2: from eventpile.commands import app -> eventpile.commands.app",
    ]
    assert statements(bare_names(tmp_path)) == [
        "domain/events.py:8: import domain.aggregate -> domain.aggregate",
        "examples/app/main.py:2: from domain import Thing -> domain",
        "mail/app.py:8: import commands.app -> commands.app",
        "tests/test_x.py:1: from store import keys -> store",
    ]
    assert statements(application_past_public_api(tmp_path)) == [
        "mail/app.py:5: from eventpile.commands.app import Application -> eventpile.commands.app",
        "mail/app.py:6: from eventpile import Application -> eventpile",
        "mail/app.py:7: from eventpile.cli import _secret -> eventpile.cli",
        "mail/app.py:8: import commands.app -> commands.app",
    ]
    # the messages name the file, the line and the import as written (and where it goes)
    assert list(map(str, outside(tmp_path, "domain", "eventpile.domain")))[:2] == [
        "domain/events.py:4: from ..store import keys  [eventpile.store.keys]",
        "domain/events.py:6: from eventpile.store.views import ViewDB",
    ]


def test_a_relative_import_beyond_the_top_is_refused(tmp_path: Path) -> None:
    plant(tmp_path, {"examples/x.py": "from ... import y\n"})
    with pytest.raises(ValueError, match="beyond the top"):
        imports(tmp_path / "examples/x.py", tmp_path)
