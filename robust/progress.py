"""Progress of long work, for a person at a terminal and for a log file alike.

On a terminal (stderr is a TTY): a tqdm bar that advances with every update. Anywhere else (CI,
``nohup``, a pipe): plain lines on stderr at a bounded rate, each with done/total, the percentage,
the time so far and an estimate of the time left; a line is written when ``interval`` seconds
(``ROBUST_PROGRESS_INTERVAL``, default 10) have passed since the last one, or when another tenth of
the work is done (at most one such line every ``interval / 10`` seconds), and a closing line when
the work took that long. ``enabled=False`` (the commands' ``--quiet``) writes nothing at all.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

#: Environment variable: seconds between two progress lines in logs.
INTERVAL_ENV = "ROBUST_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def log_interval() -> float:
    """Seconds between progress lines off a terminal (``ROBUST_PROGRESS_INTERVAL``, default 10)."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        from robust.errors import InputError

        raise InputError(INTERVAL_ENV, "a number of seconds", text) from None
    return max(0.0, value) if math.isfinite(value) else DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``, ``4000`` -> ``"1h06m"``, ``8.04`` -> ``"8s"``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LogProgress:
    """Progress as rate-limited lines (the off-terminal form of :func:`progress`); tqdm's small API.

    ``update(n)``, ``n``, ``total``, ``set_postfix(**values)``, ``set_postfix_str(text)``, ``close()``,
    iteration over ``iterable``; ``clock`` and ``stream`` are injectable for tests.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = int(initial)
        self.interval = log_interval() if interval is None else float(interval)
        self.stream, self.clock = stream, clock
        self.started = self.last = clock()
        self.tenth = self._tenth()
        self.postfix = ""
        self.lines = 0
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tenth(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any) -> None:
        """Values shown after the count (tqdm's signature; ``refresh`` has no meaning for lines)."""
        self.postfix = ", ".join(f"{k} {v}" for k, v in {**(ordered_dict or {}), **values}.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and self.n >= self.total:
            return  # the closing line says it
        now, tenth = self.clock(), self._tenth()
        since = now - self.last
        if since >= self.interval or (tenth > self.tenth and since >= self.interval / 10):
            self.tenth = tenth
            self._write(now)

    def line(self, now: float | None = None) -> str:
        """``"train erm: 340/1000 steps (34%), loss 0.41, 1m05s so far, about 2m06s left"``."""
        now = self.clock() if now is None else now
        elapsed = now - self.started
        done = (f"{self.n:g}/{self.total:g} {self.unit}" if self.total else f"{self.n:g} {self.unit}").rstrip()
        parts = [f"{self.desc}: {done}" if self.desc else done]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{format_duration(elapsed)} so far")
        worked = self.n - self.start_n
        if self.total and 0 < worked and self.n < self.total:
            parts.append(f"about {format_duration(elapsed / worked * (self.total - self.n))} left")
        return ", ".join(parts)

    def _write(self, now: float) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(self.line(now) + "\n")
        stream.flush()
        self.last = now
        self.lines += 1

    def close(self) -> None:
        """The closing line (``done``), when the work took ``interval`` or more, or wrote lines before."""
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        if self.lines or now - self.started >= self.interval:
            took = format_duration(now - self.started)
            if self.total and self.n < self.total:
                text = f"stopped at {self.n:g}/{self.total:g} {self.unit}".rstrip() + f" after {took}"
            else:
                text = f"{self.n:g} {self.unit}".rstrip() + f" done in {took}"
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write((f"{self.desc}: " if self.desc else "") + text + (f", {self.postfix}" if self.postfix else "") + "\n")
            stream.flush()


class NoProgress(LogProgress):
    """``--quiet``: counts like the others and writes nothing."""

    def update(self, n: float = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool | None = None, initial: int = 0, lines: bool = True) -> Any:
    """Progress of a loop or of work counted by ``update(n)``: a bar on a terminal, lines in logs.

    ``enabled=False`` shows nothing (``--quiet``); ``None`` or ``True``: a tqdm bar when stderr is a
    terminal, else :class:`LogProgress` lines (``lines=False``: nothing off a terminal, for an outer
    loop whose steps are already reported). Iterate over the result, or call ``update``/``close``.
    """
    if enabled is False:
        return NoProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False, dynamic_ncols=True)
    if not lines:
        return NoProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
