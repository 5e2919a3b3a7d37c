"""measure() in a separate process, so a segfault, a hang or a poisoned CUDA context stays there.

One spawned worker serves Config after Config, so isolation costs one Python + torch start-up per
sweep rather than one per Config. The worker is replaced when it dies, when a Config runs past the
timeout (it is killed), and after a Result with status "error": an error can leave a CUDA context
unusable (an illegal memory access poisons the whole process), so the next Config gets a fresh one.
An out-of-memory Result does not retire the worker; measure() frees its tensors and the cache.
The worker dies with its parent: on Linux the kernel kills it (``PR_SET_PDEATHSIG``) the moment the
sweep dies, even by ``kill -9``; elsewhere a thread notices the parent is gone within a second.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

from resbench.engine import flops
from resbench.engine.measure import Config, Result, measure, utc_now

PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15  # from <linux/prctl.h>
WORKER_NAME = b"resbench-worker"  # the worker's process name once it is tied to its parent
PARENT_CHECK_S = 0.5  # how often the fallback looks for the parent


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the parent dies: PR_SET_PDEATHSIG on Linux, plus a watcher thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(PR_SET_NAME, WORKER_NAME, 0, 0, 0)  # how `ps` and the tests know it

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # the parent is gone (also when it died before prctl took hold)

    watch_thread = threading.Thread(target=watch, name="resbench-parent-watch", daemon=True)
    watch_thread.start()


def _child(target, conn, parent_pid: int) -> None:
    """The worker process's entry: tie its life to the parent's, then serve; then leave at once.

    Every Result has been sent by then. The exit handlers run (Inductor's compile pool, the
    semaphores multiprocessing must release), but not the interpreter's teardown of every module,
    which only kept the sweep waiting in ``close()``: 0.9 s a worker on a 2-core EPYC."""
    _die_with_parent(parent_pid)
    target(conn)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(0)


def _serve(conn) -> None:
    """The worker's loop: (config dict, budget, peak, options) in, Result dict out, until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        if job[0] == "remember":  # the parent's FLOP and parameter counts, sent at the start
            flops.remember(job[1])
            continue
        config, budget_s, peak, options = job
        conn.send(measure(Config(**config), budget_s, peak=peak, **options).to_dict())


def _death(code: int | None) -> str:
    sig = -code if code is not None and code < 0 else None
    return f"worker died ({signal.Signals(sig).name})" if sig else f"worker exited with code {code}"


class Worker:
    """A reusable isolated measure(); use as a context manager (or call close()) to stop it."""

    def __init__(self, timeout_s: float, target=None) -> None:
        self.timeout_s = timeout_s
        self.starts = 0  # how many processes this Worker has spawned
        self.pids: list[int] = []  # theirs, in order (a sweep's forks each get a fresh Worker)
        self._target = target or _serve
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork after CUDA initialisation is not allowed
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(self._target, child, os.getpid()), daemon=True
        )
        self._proc.start()
        child.close()  # so the worker's death shows here as EOF
        self.starts += 1
        if self._target is _serve:  # what the parent counted need not be counted again
            self._conn.send(("remember", flops.known_counts()))
        self.pids.append(self._proc.pid)

    def measure(
        self, config: Config, budget_s: float, peak: bool | float = True, **options
    ) -> Result:
        """measure(config, budget_s, peak=peak, **options) in the worker."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        data, why = None, None
        try:
            self._conn.send((dataclasses.asdict(config), budget_s, peak, options))
            if self._conn.poll(self.timeout_s):
                data = self._conn.recv()
            else:
                why = f"timed out after {self.timeout_s:.0f} s (per-Config limit; see --timeout)"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # the worker died; its exit code says how
        if data is None:
            proc = self._proc
            self.close(kill=True)  # a hung worker is killed; a dead one is reaped for its exit code
            why = why or _death(proc.exitcode)
            return Result.for_config(config, status="error", error=why, timestamp=utc_now())
        result = Result.from_dict(data)
        if result.status == "error":
            self.close()
        return result

    def close(self, kill: bool = False) -> None:
        """Stop the worker: ask it to finish (or kill it), wait, and drop the pipe."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        if not kill and proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            proc.join(10)
        if proc.is_alive():
            proc.kill()
        proc.join()
        conn.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)
