"""The lint gate of tests/run_files.py (what CI runs): ``ruff check`` and ``mypy`` with the repository's own
pyproject.toml settings, on a throw-away copy, pass a clean tree and fail on a finding of either tool; ``main`` runs
the gate before any test file and ``--no-lint`` skips it."""
import os
import shutil
import textwrap

import pytest

import run_files  # tests/ is on sys.path (as for unet_fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLEAN = '''"""A module both tools accept."""


def double(x: int) -> int:
    return 2 * x
'''


@pytest.fixture
def tree(tmp_path):
    """A repository root with the real pyproject.toml and a one-module ``jaxhspace`` package."""
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    (tmp_path / "jaxhspace").mkdir()
    (tmp_path / "jaxhspace" / "__init__.py").write_text("")
    (tmp_path / "jaxhspace" / "good.py").write_text(CLEAN)
    return tmp_path


def test_lint_gate_passes_clean_code_and_fails_on_each_tool(tree, capsys):
    # 120 columns is the limit (not ruff's default 88): a 120-character line passes
    line = "LIMIT = " + repr("x" * 110)
    assert len(line) == 120
    (tree / "jaxhspace" / "wide.py").write_text(line + "\n")
    assert run_files.lint(str(tree)) == 0
    out = capsys.readouterr().out
    assert "ruff: rc 0" in out and "mypy: rc 0" in out

    # a style finding only (type-correct): a 121-character line
    (tree / "jaxhspace" / "wide.py").write_text("LIMIT = " + repr("x" * 111) + "\n")
    assert run_files.lint(str(tree)) == 1
    cap = capsys.readouterr()
    assert "E501" in cap.out and "wide.py" in cap.out and "mypy: rc 0" in cap.out
    assert "lint failed (ruff check .)" in cap.err and "--no-lint" in cap.err

    # a type error only (ruff-clean)
    (tree / "jaxhspace" / "wide.py").unlink()
    (tree / "jaxhspace" / "bad_type.py").write_text(CLEAN + textwrap.dedent('''

        def halve(x: int) -> str:
            return x // 2
        '''))
    assert run_files.lint(str(tree)) == 1
    cap = capsys.readouterr()
    assert "ruff: rc 0" in cap.out and "bad_type.py" in cap.out and "[return-value]" in cap.out
    assert "lint failed (mypy jaxhspace)" in cap.err


def test_main_lints_before_any_test_and_no_lint_skips(monkeypatch):
    calls = []
    monkeypatch.setattr(run_files, "lint", lambda root: calls.append(root) or 1)

    def no_test(path, args):
        raise AssertionError(f"a test file ran although the lint gate failed: {path}")

    monkeypatch.setattr(run_files, "_run", no_test)
    assert run_files.main(["-j", "1", "-m", "not slow"]) == 1
    assert calls == [ROOT]

    calls.clear()
    seen = []
    monkeypatch.setattr(run_files, "_run", lambda path, args: seen.append(args) or (path, 5, "", 0.0))
    assert run_files.main(["-j", "1", "--no-lint", "-m", "not slow"]) == 5  # every file "deselected"
    assert calls == [] and seen and all(a == ["-m", "not slow"] for a in seen)
