"""eventpile as a user has it: the wheel of the repository, installed into a fresh
virtualenv (for the wheel's tests, and for the command line's benchmark, whose
processes then pay no editable-install hook at start-up).

Offline: the wheel is built with the test environment's setuptools (no build
isolation, no index) and installed with ``--no-deps --no-index``; the fresh
environment finds the dependencies in the test environment's site-packages, named
by a ``.pth`` file (a directory only: the editable install of eventpile there is a
``.pth`` hook of its own, which a directory named by a ``.pth`` does not run).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".benchmarks",
)
"""What the build is not given (as ``.gitignore``): version control, environments, caches,
earlier builds.

A build in the repository itself would write ``build/`` and ``eventpile.egg-info``
there (where someone may be working), and files left in ``build/lib`` by an
earlier build end up in the wheel even after their source is gone.
"""
TIMEOUT_S = 180


class Unavailable(Exception):
    """This Python cannot make a virtualenv."""


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """The standard output of a command that must succeed (its output in the failure)."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited with {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that sees nothing of the test's own Python."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }
    return {
        **env,
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }


def dependency_dirs() -> list[str]:
    """Where the test environment's packages are (eventpile's dependencies among them)."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def site_packages(python: Path) -> Path:
    return Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )


def build_wheel(work: Path) -> Path:
    """The wheel of the repository as it is now (uncommitted changes included), built in
    ``work``."""
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--check-build-dependencies",  # the build-system's setuptools: `pip install -e .[test]`
        "--no-index",
        "--quiet",
        "--wheel-dir",
        work / "dist",
        source,  # a path (a bare word would be looked up as a project name)
        env=clean_env(),
    )
    (built,) = (work / "dist").glob("eventpile-*.whl")
    return built


def install(wheel: Path, where: Path) -> Path:
    """A new virtualenv at ``where`` with ``wheel`` installed and the test environment's
    dependencies; its ``bin`` directory."""
    if importlib.util.find_spec("venv") is None:
        raise Unavailable(f"the venv module is not available to {sys.executable}")
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if made.returncode != 0:
        raise Unavailable(f"`{sys.executable} -m venv` cannot make a virtualenv: {made.stderr}")
    python = where / "bin" / "python"
    # the test environment's pip installs into the new one (which needs no pip of its own)
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        wheel,
        env=clean_env(),
    )
    (site_packages(python) / "_test_dependencies.pth").write_text(
        "".join(f"{d}\n" for d in dependency_dirs())
    )
    return where / "bin"
