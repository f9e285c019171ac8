"""The docs site builds with no warning (nitpicky: every reference resolves)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    # Only a missing Sphinx skips: with Sphinx there, a missing extension or theme fails.
    pytest.importorskip("sphinx", reason="Sphinx is not installed (the docs dependency group)")
    import sphinx.deprecation
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    log = tmp_path / "warnings.log"
    args = ["-E", "-W", "--keep-going", "-n", "-q", "-w", str(log), "-b", "html"]
    with warnings.catch_warnings():
        # Sphinx's and MyST's own use of what the next Sphinx removes: not ours to fix.
        for name in dir(sphinx.deprecation):
            if name.startswith("RemovedInSphinx"):
                warnings.simplefilter("ignore", getattr(sphinx.deprecation, name))
        status = build_main([*args, "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)])
    assert status == 0, log.read_text()
    assert log.read_text() == ""
    assert (out / "index.html").is_file() and (out / "api.html").is_file()
