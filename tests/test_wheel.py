"""The wheel: built from the repository, installed into a fresh virtualenv, used there.

The layer folders (``domain/``, ``commands/``, ``projections/``, ``store/``) and the
mail application (``mail/``) are at the top of the repository and reach the
``eventpile`` package through symlinks (``eventpile/domain -> ../domain``, …). The
wheel must hold them as ``eventpile.*`` and nothing under their bare names: an
application with a ``domain`` package of its own (a common name) must get its own
and eventpile must keep working beside it.

The wheel is built and installed by :mod:`tests.installed`.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from tests.installed import (
    ROOT,
    Unavailable,
    build_wheel,
    clean_env,
    dependency_dirs,
    install,
    run,
    site_packages,
)

FORMER = ("domain", "commands", "projections", "store", "mail")
"""The folders the symlinks in ``eventpile/`` point to: never top-level packages."""
NOT_SHIPPED = (*FORMER, "examples", "tests")
PASSPHRASE = "wheel test passphrase"


def wheel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def wheel_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode()


def modules_in_tree() -> set[str]:
    """Every module of the ``eventpile`` package in the repository, through the symlinks."""
    found = set()
    for folder, dirs, files in os.walk(ROOT / "eventpile", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found |= {Path(folder, f).relative_to(ROOT).as_posix() for f in files if f.endswith(".py")}
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the repository as it is now (uncommitted changes included)."""
    assert (ROOT / "eventpile" / "domain").is_symlink()  # copied as one
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed and the test environment's dependencies."""
    try:
        return install(wheel, tmp_path_factory.mktemp("venv") / "env").parent
    except Unavailable as why:
        pytest.skip(str(why))


# the wheel -----------------------------------------------------------------------


def test_the_wheel_holds_every_module_under_eventpile(wheel: Path) -> None:
    modules = {n for n in wheel_files(wheel) if n.endswith(".py")}
    expected = modules_in_tree()
    named = {
        "eventpile/__init__.py",
        "eventpile/cli.py",
        "eventpile/testing/__init__.py",
        "eventpile/testing/postgres.py",
        "eventpile/domain/events.py",
        "eventpile/mail/cli.py",
        "eventpile/commands/app.py",
        "eventpile/commands/cli/core.py",
        "eventpile/store/home.py",
        "eventpile/store/views.py",
    }
    assert named <= expected, f"not in the repository's eventpile/: {sorted(named - expected)}"
    missing = sorted(expected - modules)
    assert not missing, f"{wheel.name} lacks modules of the repository: {missing}"
    extra = sorted(modules - expected)
    assert not extra, f"{wheel.name} has modules the repository has not: {extra}"


def test_the_wheel_has_no_top_level_package_but_eventpile(wheel: Path) -> None:
    tops = {n.split("/")[0] for n in wheel_files(wheel)}
    shipped = sorted(t for t in tops if t.split(".")[0] in NOT_SHIPPED)
    assert not shipped, f"{wheel.name} has top-level {shipped}: they belong under eventpile/"
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"eventpile"}, f"{wheel.name}: top-level {sorted(tops)}"
    (metadata,) = dist_info
    assert wheel_text(wheel, f"{metadata}/top_level.txt").split() == ["eventpile"]
    entry_points = wheel_text(wheel, f"{metadata}/entry_points.txt")
    assert re.search(r"^eventpile = eventpile\.mail\.fast:run$", entry_points, re.M), entry_points


# the installed wheel -------------------------------------------------------------

USER_PACKAGES = {name: f"the user's {name}" for name in FORMER}
"""An application's own packages under the names eventpile's folders have in the repository."""

APPLICATION = '''
"""A user's application on the installed eventpile, beside packages of its own."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import commands
import domain  # the user's own: eventpile's is eventpile.domain
import mail
import projections
import store

import eventpile
from eventpile import (
    Aggregate,
    Application,
    Command,
    Context,
    DomainEvent,
    Handler,
    Home,
    Invertible,
    Outcome,
    Private,
    Undo,
    first_event,
    handles,
)


class TallyEvent(Invertible):
    """An event of a tally's stream."""


class Counted(TallyEvent):
    by: int
    note: Annotated[str, Private] = ""

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(Uncounted, version, by=self.by, note=self.note)


class Uncounted(TallyEvent):
    by: int
    note: Annotated[str, Private] = ""

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(Counted, version, by=self.by, note=self.note)


class Tally(Aggregate):
    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (TallyEvent,)

    total: int = 0

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        if not isinstance(event, Counted):
            return super().start(event)
        return cls(id=event.originator_id, total=event.by)

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            case Counted(by=by):
                return self.model_copy(update={"total": self.total + by})
            case Uncounted(by=by):
                return self.model_copy(update={"total": self.total - by})
        return self


class Count(Command):
    tally_id: uuid.UUID
    by: int
    note: Annotated[str, Private] = ""

    def describe(self) -> str:
        return f"Count {self.by}"


@handles(Count)
def count(command: Count, ctx: Context) -> Outcome:
    tally = ctx.load(Tally, command.tally_id)
    if tally is None:
        ctx.record(first_event(Counted, command.tally_id, by=command.by, note=command.note))
    else:
        ctx.record(tally.event(Counted, by=command.by, note=command.note))
    return Outcome(f"Counted {command.by}", {"by": command.by})


class Tallies(Application):
    aggregates: ClassVar[tuple[type[Aggregate], ...]] = (Tally,)
    handlers: ClassVar[tuple[Handler[Any], ...]] = (count,)


def main(home_path: str, passphrase: str) -> dict[str, Any]:
    home = Home(Path(home_path))
    tally_id = uuid.uuid4()
    app = Tallies(home, home.init(passphrase))
    try:
        app.execute(Count(tally_id=tally_id, by=2, note="first"))
        counted = app.execute(Count(tally_id=tally_id, by=3, note="second"))
        total_counted = app.load(Tally, tally_id).total
        undone = app.execute(Undo())
        total_undone = app.load(Tally, tally_id).total
    finally:
        app.close()
    app = Tallies(home, home.unlock(passphrase))  # what was written is read back
    try:
        total_reopened = app.load(Tally, tally_id).total
    finally:
        app.close()
    framework = {
        name: getattr(module, "__file__", None)
        for name, module in sys.modules.items()
        if name == "eventpile" or name.startswith("eventpile.")
    }
    return {
        "users": {
            name: [sys.modules[name].NAME, sys.modules[name].__file__]
            for name in ("domain", "commands", "projections", "store", "mail")
        },
        "eventpile": eventpile.__file__,
        "framework": framework,
        "modules": {
            name: module.__file__
            for name, module in sys.modules.items()
            if getattr(module, "__file__", None)
        },
        "private_fields": sorted(Counted.private_fields()),
        "counted": {"id": str(counted.id), "message": counted.message},
        "total_counted": total_counted,
        "undone": {"message": undone.message, **undone.result},
        "total_undone": total_undone,
        "total_reopened": total_reopened,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's working directory: the application and its own packages."""
    where = tmp_path / "project"
    for name, text in USER_PACKAGES.items():
        (where / name).mkdir(parents=True)
        (where / name / "__init__.py").write_text(f"NAME = {text!r}\n")
    (where / "app.py").write_text(APPLICATION)
    return where


def test_an_application_runs_on_the_installed_wheel(
    venv: Path, project: Path, tmp_path: Path
) -> None:
    out = run(
        venv / "bin" / "python",
        "app.py",
        tmp_path / "home",
        PASSPHRASE,
        cwd=project,
        env=clean_env(EVENTPILE_HOME=str(tmp_path / "unused-home")),
    )
    facts = json.loads(out)
    installed = site_packages(venv / "bin" / "python") / "eventpile"
    # the user's packages are the user's, eventpile is the installed one
    for name, (text, file) in facts["users"].items():
        assert text == USER_PACKAGES[name], name
        assert Path(file) == project / name / "__init__.py", name
    assert Path(facts["eventpile"]) == installed / "__init__.py"
    outside = {
        name: file
        for name, file in facts["framework"].items()
        if file is None or not Path(file).is_relative_to(installed)
    }
    assert not outside, f"eventpile modules not from the fresh virtualenv: {outside}"
    assert {"eventpile.domain.events", "eventpile.commands.app", "eventpile.store.home"} <= set(
        facts["framework"]
    )
    dependencies = [Path(d) for d in dependency_dirs()]
    from_repository = {
        name: file
        for name, file in facts["modules"].items()
        if Path(file).is_relative_to(ROOT)
        and not any(Path(file).is_relative_to(d) for d in dependencies)
    }
    assert not from_repository, f"modules imported from the repository: {from_repository}"
    assert not any(name.startswith("__editable__") for name in facts["modules"])
    # the command and its undo
    assert facts["private_fields"] == ["note"]
    assert facts["counted"]["message"] == "Counted 3"
    assert facts["total_counted"] == 5
    assert facts["undone"]["undid"] == facts["counted"]["id"]
    assert facts["undone"]["reverted"] == 1
    assert facts["undone"]["skipped"] == 0
    assert facts["undone"]["message"].startswith("Undid ")
    assert facts["total_undone"] == 2
    assert facts["total_reopened"] == 2


def test_the_installed_console_script(venv: Path, tmp_path: Path) -> None:
    script = venv / "bin" / "eventpile"
    assert script.exists(), (
        f"the wheel installed no console script: {sorted(os.listdir(script.parent))}"
    )
    assert script.read_text().startswith(f"#!{venv / 'bin' / 'python'}"), script.read_text()
    out = run(
        script,
        "--help",
        cwd=tmp_path,
        env=clean_env(COLUMNS="200", NO_COLOR="1", TERM="dumb", EVENTPILE_HOME=str(tmp_path)),
    )
    listed = set(re.findall(r"^\W\s([a-z][a-z-]*)\s{2,}\S", out, re.M))
    assert {"import", "search", "undo"} <= listed, out
