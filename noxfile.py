"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s mypy``, ``nox -s bench``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "mypy", "tests"]


def install(session: nox.Session, group: str) -> None:
    """The project, editable, with one of its dependency groups (as .ci/run does)."""
    session.install("-q", "-U", "pip")
    session.install("-q", "-e", ".", "--group", group)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against a real PostgreSQL (a throwaway one if none answers)."""
    install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    install(session, "lint")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The quick side-by-side benchmark, results in bench-results/.

    Arguments go to ``python -m unipool bench`` and win over these defaults:
    ``nox -s bench -- --chart docs/bench.png``, or ``-- --dsn URI``.
    """
    install(session, "bench")
    out = "bench-results"
    session.run("python", "-c", f"import os; os.makedirs({out!r}, exist_ok=True)")
    session.run("python", "-m", "unipool", "bench", "--quick", "--json", f"{out}/bench.json",
                "--chart", f"{out}/bench.png", *session.posargs)  # fmt: skip


@nox.session(default=False)
def faults_long(session: nox.Session) -> None:
    """The fault scenarios in their long form (tests/faults with UNIPOOL_FAULTS_LONG=1): a
    10-minute outage, a 10^6-cycle soak, 5 minutes of fairness, a 60 s terminate storm, ...
    for every backend x mode, so hours in all; narrow it with ``-- -k ...``."""
    install(session, "test")
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/faults",
        "-s",
        "-o",
        "timeout=3600",
        *session.posargs,
        env={"UNIPOOL_FAULTS_LONG": "1"},
    )
