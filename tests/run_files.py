"""Lint and type-check the repository, then run every tests/test_*.py file in its own pytest process (two at a
time) and summarise.

    python tests/run_files.py [-j 2] [--no-lint] [pytest args...]     # e.g. -m "not slow"

First ``ruff check .`` and ``mypy jaxhspace`` (both configured in pyproject.toml) run from the repository root; a
finding of either stops the run with exit status 1 before any test starts (CI runs this file, so CI fails on it).
``--no-lint`` skips both (local use).

Why: one long-lived process that compiles thousands of XLA programs (JAX and PyTorch side by side) crashed once inside
XLA's CPU compiler (SIGSEGV in ``backend_compile_and_load``) after ~45% of the suite, while every file passes on its
own; a process per file keeps each file's compiled state to itself, and two workers use both cores. The exit status
is pytest's: 0 all passed, 1 some test failed (or a lint / type-check finding), 5 nothing collected, anything else
(a crash) is reported as failing.
"""
from __future__ import annotations

import concurrent.futures
import glob
import os
import subprocess
import sys
import tempfile
import time


# (name, arguments after ``python -m``): run from the repository root, configured in its pyproject.toml
LINT_COMMANDS = (
    ("ruff", ["ruff", "check", "."]),
    ("mypy", ["mypy", "jaxhspace"]),
)


def lint(root: str) -> int:
    """Run :data:`LINT_COMMANDS` in ``root`` (a repository root with its pyproject.toml), each with this Python,
    printing every finding. Returns 0 if all pass, else 1 (after running all of them)."""
    failed = []
    for name, args in LINT_COMMANDS:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", *args], cwd=root, capture_output=True, text=True)
        print(f"{name}: rc {proc.returncode}, {time.time() - t0:.0f} s", flush=True)
        if proc.returncode != 0:
            failed.append(" ".join(args))
            print((proc.stdout + proc.stderr).rstrip(), flush=True)
    if failed:
        print(f"lint failed ({'; '.join(failed)}): fix the findings above before the tests run (the settings are in "
              "pyproject.toml's [tool.ruff] / [tool.mypy]; both tools come with the test extra, "
              "pip install -e \".[test]\"); python tests/run_files.py --no-lint skips this step locally",
              file=sys.stderr, flush=True)
        return 1
    return 0


def _run(path: str, args: list[str]) -> tuple[str, int, str, float]:
    t0 = time.time()
    # a base temp folder of its own per file: concurrent pytest processes never clean up each other's tmp_path
    parent = os.path.join(tempfile.gettempdir(), "jaxhspace-tests")
    os.makedirs(parent, exist_ok=True)  # pytest creates --basetemp itself, but not its parent
    base = os.path.join(parent, os.path.splitext(os.path.basename(path))[0])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--basetemp={base}", path, *args],
                          capture_output=True, text=True)
    return path, proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def main(argv: list[str]) -> int:
    jobs = 2
    if argv[:1] == ["-j"]:
        jobs, argv = int(argv[1]), argv[2:]
    run_lint = "--no-lint" not in argv
    argv = [a for a in argv if a != "--no-lint"]
    root = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(root, "test_*.py")))
    if not files:
        print("no test files found", file=sys.stderr)
        return 5
    if run_lint and lint(os.path.dirname(root)) != 0:
        return 1
    failed, collected = [], 0
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for path, rc, out, wall in pool.map(lambda p: _run(p, argv), files):
            name = os.path.relpath(path, os.path.dirname(root))
            summary = out.strip().splitlines()[-1] if out.strip() else "(no output)"
            print(f"{name}: rc {rc}, {wall:.0f} s: {summary}", flush=True)
            if rc == 5:
                continue  # every test of the file deselected (e.g. -m "not slow")
            collected += 1
            if rc != 0:
                failed.append(name)
                print(out, flush=True)
    print(f"{len(files)} files, {len(failed)} failing, {time.time() - t0:.0f} s", flush=True)
    if failed:
        print("failing: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0 if collected else 5


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
