"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s mypy``, ``nox -s docs``,
``nox -s bench``."""

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
    """The whole test suite against a real PostgreSQL (a throwaway one if none answers),
    under coverage: below the floor set in pyproject.toml ([tool.coverage.report]) it fails.

    Arguments replace that plan with one plain pytest run, with no floor to fail:
    ``nox -s tests -- tests/test_dsn.py``, ``-- -k storm``; ``-- --cov -x`` measures again.
    """
    install(session, "test")
    session.run("python", "-m", "pytest", *(session.posargs or ["--cov"]))


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
def docs(session: nox.Session) -> None:
    """The docs site (Sphinx, MyST, furo) in docs/_build/html; any warning fails it.

    Arguments go to sphinx-build after these: ``nox -s docs -- -b linkcheck``.
    """
    install(session, "docs")
    session.run("python", "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-b", "html",
                "docs", "docs/_build/html", *session.posargs)  # fmt: skip


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


#: Long-form fault tests that spend their time waiting (a 10-minute outage, connections
#: living out a 60 s lifetime): they run side by side, each on a server of its own.
_WAITING = "long_outage or lifetime_jitter"


@nox.session(default=False)
def faults_long(session: nox.Session) -> None:
    """The fault scenarios in their long form (tests/faults with UNIPOOL_FAULTS_LONG=1): a
    10-minute outage, a 10^6-cycle soak, 5 minutes of fairness, a 60 s terminate storm, ...
    for every backend x mode: about 1.5 hours. The waiting tests run first, side by side
    (pytest-xdist), then the rest one at a time. Arguments replace that plan with one run:
    ``nox -s faults_long -- -k storm``."""
    install(session, "test")
    session.install("-q", "pytest-xdist")
    env = {"UNIPOOL_FAULTS_LONG": "1"}
    run = ("python", "-m", "pytest", "tests/faults", "-rP", "-o", "timeout=3600")
    if session.posargs:
        session.run(*run, *session.posargs, env=env)
        return
    session.run(*run, "-k", _WAITING, "-n", "9", env=env)
    session.run(*run, "-k", f"not ({_WAITING})", env=env)
