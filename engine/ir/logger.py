"""A TensorRT-style logger: severities, a threshold, and one line per message."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TextIO


class Severity(IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4

    @property
    def tag(self) -> str:
        return {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}[int(self)]


class Logger:
    """Prints messages at or above ``min_severity`` as ``[I] text`` lines (trtexec's format).

    Messages are also kept (``records``) so tools and tests can inspect what a build reported.
    """

    def __init__(self, min_severity: Severity = Severity.WARNING, stream: TextIO | None = None,
                 timestamps: bool = False) -> None:
        self.min_severity = Severity(min_severity)
        self.stream = stream
        self.timestamps = timestamps
        self.records: list[tuple[Severity, str]] = []
        self._lock = threading.Lock()
        # Optional: ``factory(what, total)`` -> a progress bar with ``update(n)``/``close()`` (the CLI
        # passes tqdm on a terminal); ``Progress`` then drives the bar instead of logging lines.
        self.progress_factory: Callable[[str, int | None], Any] | None = None

    def log(self, severity: Severity, message: str) -> None:
        severity = Severity(severity)
        with self._lock:
            self.records.append((severity, message))
            if severity <= self.min_severity:
                stamp = time.strftime("[%m/%d/%Y-%H:%M:%S] ") if self.timestamps else ""
                print(f"{stamp}[{severity.tag}] {message}", file=self.stream or sys.stderr, flush=True)

    def error(self, message: str) -> None:
        self.log(Severity.ERROR, message)

    def warning(self, message: str) -> None:
        self.log(Severity.WARNING, message)

    def info(self, message: str) -> None:
        self.log(Severity.INFO, message)

    def verbose(self, message: str) -> None:
        self.log(Severity.VERBOSE, message)

    def messages(self, severity: Severity | None = None) -> list[str]:
        return [m for s, m in self.records if severity is None or s == severity]


class Progress:
    """Reports progress of a long step at most every ``interval`` seconds (and at the end, when the
    total is known)."""

    def __init__(self, logger: Logger, what: str, total: int | None = None, interval: float = 2.0) -> None:
        self.logger, self.what, self.total, self.interval = logger, what, total, interval
        self.start = self._last = time.perf_counter()
        factory = getattr(logger, "progress_factory", None)
        self._bar = factory(what, total) if factory is not None else None
        self._done = 0

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._done)
            self._done = done
            if self.total is not None and done >= self.total:
                self._bar.close()
            return
        now = time.perf_counter()
        if (self.total is not None and done >= self.total) or now - self._last >= self.interval:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            self.logger.info(f"{self.what}: {done}{of} ({now - self.start:.1f} s)")
