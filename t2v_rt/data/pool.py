"""A process pool over the machine's cores for per-clip work (decode, render + encode), in
order, inline when the work is small. Workers ignore Ctrl-C: the parent alone handles it,
stops handing out work and cleans up (so an interrupted build leaves nothing behind)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

# Below this many jobs the pool's start-up (a fresh interpreter per worker) costs more than it
# saves.
MIN_PARALLEL_JOBS = 64
MAX_WORKERS = 8


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _init_worker(initializer, args) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*args)


def parallel_map(fn: Callable, jobs: Iterable, workers: int | None = None, chunksize: int = 16,
                 initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """``fn(job)`` for each job, results in order. ``workers``: processes (None: the cores this
    process may use, at most 8; 1: inline). ``initializer(*initargs)`` runs in each worker
    process (not inline)."""
    jobs = list(jobs)
    n = min(workers or min(cpu_count(), MAX_WORKERS), max(1, len(jobs)))
    if n <= 1 or (workers is None and len(jobs) < MIN_PARALLEL_JOBS):
        for job in jobs:
            yield fn(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")   # no fork of a parent holding threads
    pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                               initargs=(initializer, initargs))
    try:
        # The workers start with Ctrl-C ignored (kept through exec, and by Python's start-up):
        # a Ctrl-C in the terminal reaches the whole process group, and a worker still
        # importing must not print a traceback. The parent handles it alone.
        with _sigint_ignored(), _main_hidden():
            results = pool.map(fn, jobs, chunksize=max(1, min(chunksize, len(jobs) // (4 * n) or 1)))
        yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _sigint_ignored():
    import signal

    try:
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:           # not the main thread: nothing to do
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)


@contextmanager
def _main_hidden():
    """While the workers start: a spawned worker re-runs the parent's main script unless it is
    a module's ``__main__``, and a script that calls this at its top level without an
    ``if __name__ == "__main__":`` guard would fail there ("An attempt has been made to start
    a new process before ..."). The jobs are functions of this package, never of the main
    script, so the workers are told there is none. (Every worker starts inside this window:
    ``map`` submits all the chunks at once.)"""
    import sys

    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved = {k: main.__dict__.get(k, missing) for k in ("__file__", "__spec__")}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                main.__dict__.pop(k, None)
            else:
                main.__dict__[k] = v
