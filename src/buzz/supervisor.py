"""`buzz serve --workers N`: N processes serving one port, each with its own ledger writer.

The parent binds and listens on the socket, then forks the workers, which inherit it: the kernel
hands each new connection to one of the processes waiting on it, so a worker that is busy (or
stopped) leaves its share to the others. The parent serves no request (only, when it is on, the
metrics port, with every worker's values). It forwards SIGTERM and SIGINT
to the workers and waits for each to finish its requests and flush its ledger rows. A worker that
dies after it served is replaced; one that dies before it could serve (a database it cannot open,
say) stops them all, since a replacement would die the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("buzz")


def supervise(
    count: int,
    serve: Callable[[int, Callable[[], None]], None],
    started: Callable[[], None] | None = None,
    exited: Callable[[int], None] | None = None,
) -> int:
    """Run `serve(number, ready)` in `count` forked processes until SIGTERM or SIGINT, and return
    the exit status. A worker calls `ready()` once it serves. `started()` is called once the first
    workers are forked (a thread it starts is then not in their copy of the process), and
    `exited(pid)` for each worker that exits."""
    children: dict[int, tuple[int, int]] = {}  # pid -> (worker number, the read end of its ready pipe)
    stopping: list[int] = []  # the signal that stops them, once one came

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
        for pid in children:
            _kill(pid, signum)

    parent = os.getpid()

    def spawn(number: int) -> None:
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling (uvicorn installs its own), then serve
            os.close(ready_read)
            # A process group of its own: Ctrl-C's SIGINT goes to the terminal's foreground group,
            # and a worker that got it from there and again from the parent would take the second
            # as "exit now", skipping its graceful stop and the ledger flush. It hears the parent only.
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _stop_with(parent)
            code = 0
            try:
                serve(number, lambda: _say_ready(ready_write))
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(ready_write)
        os.set_blocking(ready_read, False)
        children[pid] = (number, ready_read)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(1, count + 1):
            spawn(number)
        if started is not None:
            started()
        status = 0
        while children:
            pid, wait_status = os.wait()
            if pid not in children:
                continue
            number, ready_read = children.pop(pid)
            if exited is not None:
                exited(pid)
            served = _was_ready(ready_read)
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping:
                if code not in (0, -stopping[0]):
                    status = 1
                continue
            if not served:
                log.error("worker %d (pid %d) exited at start (status %d): stopping", number, pid, code)
                forward(signal.SIGTERM, None)
                status = 1
                continue
            log.error("worker %d (pid %d) exited (status %d): starting another", number, pid, code)
            spawn(number)
        return status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the parent dies, even by SIGKILL: orphaned
    workers would go on holding the port, and a restarted buzz could not bind it. They stop as on
    any SIGTERM, their rows flushed."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request above took hold
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _say_ready(fd: int) -> None:
    os.write(fd, b"1")
    os.close(fd)


def _was_ready(fd: int) -> bool:
    """Whether the worker behind this pipe said it served; closes the pipe."""
    try:
        return os.read(fd, 1) == b"1"
    except BlockingIOError:  # it never wrote, and still holds the pipe (it cannot: it exited)
        return False
    finally:
        os.close(fd)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
        os.kill(pid, signum)
