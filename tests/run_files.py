"""Run every tests/test_*.py file in its own pytest process (two at a time), then summarise.

    python tests/run_files.py [-j 2] [pytest args...]     # e.g. -m "not slow"

Why: one long-lived process that compiles thousands of XLA programs (JAX and PyTorch side by side) crashed once inside
XLA's CPU compiler (SIGSEGV in ``backend_compile_and_load``) after ~45% of the suite, while every file passes on its
own; a process per file keeps each file's compiled state to itself, and two workers use both cores. The exit status
is pytest's: 0 all passed, 1 some test failed, 5 nothing collected, anything else (a crash) is reported as failing.
"""
from __future__ import annotations

import concurrent.futures
import glob
import os
import subprocess
import sys
import tempfile
import time


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
    root = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(root, "test_*.py")))
    if not files:
        print("no test files found", file=sys.stderr)
        return 5
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
