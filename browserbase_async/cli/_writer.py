"""Standard output and error written off the event loop, so that a reader who stops reading
(``release --json | less``) holds up no release and no signal.

A write to a pipe whose reader does not read blocks once the pipe is full (64 kB on Linux).
Made on the event loop, it stopped every release, and the loop's SIGTERM handler, until the
reader read again. While a command runs (`BACKGROUND.running`), what it writes to a real
descriptor goes to a queue, and a thread of its own writes it there; a descriptor shared by
standard output and error (a terminal, ``2>&1``) has one queue for both, in the order written.

At the end the command waits for the queues to reach their readers (`Background.drain`), a wait
that Ctrl-C and SIGTERM end. After Ctrl-C or SIGTERM (`Background.abandon`), each queue is
written as far as its reader takes it without waiting, then the rest is dropped: the reader
gets whole rows, in order, up to there (a row is written in one piece when it fits in
``PIPE_BUF``, 4 kB, as every row of ``release --json`` does).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
from collections.abc import Callable, Iterator
from typing import IO, Final

import attrs

CHUNK: Final[int] = getattr(select, "PIPE_BUF", 512)  # 512: POSIX's least; no PIPE_BUF: no poll
"""Bytes written at a time: a write this size to a pipe that polls writable never blocks."""
LAST_WRITES_BOUND: Final = 1.0
"""Seconds `Background.abandon` waits for a writer still in a write that polled writable
(a terminal stopped with Ctrl-S, another process writing the same pipe): then it goes on."""

OnFailure = Callable[[OSError], None]


def silence(fd: int) -> None:
    """Point *fd* at the null device, once its reader has gone.

    What is still buffered for it then goes nowhere, and the interpreter's last flush
    finds no broken pipe to complain about.
    """
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


@attrs.define(eq=False)
class Writer:
    """The bytes for one output target (a pipe, a terminal, a file), written in the order
    given, from a thread of its own."""

    _items: collections.deque[tuple[int, bytes, OnFailure]] = attrs.field(factory=collections.deque)
    _ready: threading.Condition = attrs.field(factory=threading.Condition)
    _idle: threading.Event = attrs.field(factory=threading.Event)
    _gone: set[int] = attrs.field(factory=set)
    _stopping: bool = False
    _thread: threading.Thread | None = None
    _wake: tuple[int, int] = attrs.field(factory=os.pipe)

    def put(self, fd: int, data: bytes, on_failure: OnFailure) -> None:
        """Queue *data* for *fd*; *on_failure* is told of an error writing it (once per fd)."""
        with self._ready:
            if self._stopping:
                return
            self._items.append((fd, data, on_failure))
            self._idle.clear()
            if self._thread is None:
                # A daemon: one stuck in a write must not keep the process from exiting.
                self._thread = threading.Thread(target=self._run, name="output", daemon=True)
                self._thread.start()
            self._ready.notify()

    def gone(self, fd: int) -> bool:
        """Whether writing to *fd* failed (its reader went away): what comes for it is dropped."""
        return fd in self._gone

    def wait(self) -> None:
        """Return once everything queued is written (or dropped). Signals interrupt the wait."""
        if self._thread is not None:
            self._idle.wait()

    def abandon(self) -> None:
        """Write what the readers take now, without waiting for them; drop the rest."""
        with self._ready:
            if self._stopping:  # once: its wake-up pipe is closed after
                return
            self._stopping = True
            self._ready.notify()
        os.write(self._wake[1], b"!")  # wakes a poll that waits for a reader
        if self._thread is not None:
            self._thread.join(LAST_WRITES_BOUND)
        if self._thread is None or not self._thread.is_alive():
            for end in self._wake:
                os.close(end)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._stopping:
                    self._idle.set()
                    self._ready.wait()
                if not self._items:
                    self._idle.set()
                    return
                fd, data, on_failure = self._items.popleft()
            if fd not in self._gone:
                self._send(fd, data, on_failure)

    def _send(self, fd: int, data: bytes, on_failure: OnFailure) -> None:
        view = memoryview(data)
        while view:
            if not self._writable(fd):  # stopping, and this reader takes nothing now
                self._gone.add(fd)
                return
            try:
                written = os.write(fd, view[:CHUNK])
            except OSError as exc:  # EPIPE: the reader went away; or a full disk
                self._gone.add(fd)
                silence(fd)
                on_failure(exc)
                return
            view = view[written:]

    def _writable(self, fd: int) -> bool:
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        poll.register(self._wake[0], select.POLLIN)
        while True:
            # Until stopped, wait for the reader as long as it takes; then, not at all.
            ready = dict(poll.poll(0 if self._stopping else None))
            if fd in ready:  # writable; or an error, which the write then says
                return True
            if self._stopping:
                return False


@attrs.define
class Background:
    """The writers of one command's standard output and error, by target."""

    running: bool = False
    _writers: dict[tuple[int, int], Writer] = attrs.field(factory=dict)

    def writer(self, stream: IO[str]) -> tuple[Writer, int] | None:
        """The writer for *stream*, and its descriptor; ``None`` where the stream is written
        as it is: no command running, no descriptor (click's test runner), no ``poll``."""
        if not self.running or not hasattr(select, "poll"):
            return None
        try:
            fd = stream.fileno()
            stat = os.fstat(fd)
            stream.flush()  # what it holds goes first
        except (OSError, ValueError):
            return None
        target = (stat.st_dev, stat.st_ino)
        return self._writers.setdefault(target, Writer()), fd

    def drain(self) -> None:
        """Wait until every writer wrote what it was given. Signals interrupt the wait."""
        for writer in list(self._writers.values()):
            writer.wait()

    def abandon(self) -> None:
        """Write what the readers take now; drop the rest (after Ctrl-C or SIGTERM)."""
        for writer in self._writers.values():
            writer.abandon()

    @contextlib.contextmanager
    def on(self) -> Iterator[Background]:
        """Write standard output and error from the writers meanwhile; then, as before.

        On the way out, what is still queued is abandoned: `drain` first to deliver it.
        """
        self.running = True
        try:
            yield self
        finally:
            self.running = False
            self.abandon()
            self._writers.clear()


BACKGROUND: Final = Background()
"""The process's one: its standard output and error are the process's."""
