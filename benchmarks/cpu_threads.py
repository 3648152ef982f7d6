"""CPU thread limits shared by the benchmarks (imports neither jax nor torch: it must run before they start).

    from benchmarks.cpu_threads import cpus_usable, limit_cpu_threads
    if __name__ == "__main__" and "jax" not in sys.modules:
        limit_cpu_threads(sys.argv[1:])   # reads --threads N (default 1)
"""
from __future__ import annotations

import os
import time


def threads_from_argv(argv) -> int:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv`` (1 when absent), before argparse runs."""
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 1


def xla_thread_flags(threads: int) -> str:
    """XLA CPU flags asking for an intra-op pool of ``threads`` (must be set before jax is imported)."""
    multi = "true" if threads > 1 else "false"
    return f"--xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}"


def pin_to_cpus(threads: int) -> None:
    """Restrict this process to ``threads`` CPUs (Linux). XLA's CPU thread pools ignore the flags of
    :func:`xla_thread_flags` in current jax (JAX used both cores with them), so a fair one-thread comparison
    needs the affinity; set it before jax and torch start their threads, which inherit it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:max(1, threads)])


def limit_cpu_threads(argv) -> int:
    """Append :func:`xla_thread_flags` to ``XLA_FLAGS`` and :func:`pin_to_cpus` for ``--threads`` in ``argv``;
    returns the thread count."""
    n = threads_from_argv(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_thread_flags(n)).strip()
    pin_to_cpus(n)
    return n


def cpus_usable() -> int:
    """CPUs this process may run on (its affinity; ``os.cpu_count()`` where affinity is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Clock:
    """``with Clock() as c: ...`` -> ``c.wall`` and ``c.cpu``: wall and process-CPU seconds of the block (CPU time is
    less sensitive to a shared machine)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
