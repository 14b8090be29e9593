"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from robust.progress import progress

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["announce_suite", "device_option", "progress", "quiet_option", "seed_option", "threads_option", "with_split"]


def seed_option(func: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")(func)


def device_option(func: F) -> F:
    return click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda or cuda:N.")(func)


def quiet_option(func: F) -> F:
    """``--quiet``/``-q``: no progress bars on a terminal and no progress lines in logs."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines.")(func)


def _set_threads(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


def threads_option(func: F) -> F:
    """``--threads N``: torch's CPU threads, set as soon as the option is read (the value is passed on too)."""
    return click.option("--threads", type=click.IntRange(1), default=None, callback=_set_threads,
                        help="torch CPU threads (default: torch's choice).")(func)



def with_split(spec: str, split: str | None) -> str:
    """A data spec with ``--split`` put in: ``digits,size=32`` and ``test`` -> ``digits:test,size=32``."""
    if not split:
        return spec
    head, comma, options = spec.partition(",")
    if head not in ("synthetic", "digits"):
        from robust.errors import InputError

        raise InputError("--split", "a built-in dataset named without a split (synthetic or digits)", spec)
    return f"{head}:{split}{comma}{options}"


def announce_suite(suite: Any) -> None:
    """One line on stderr for each finished audit suite (``robust audit`` and ``robust demo``, unless ``--quiet``)."""
    click.echo(f"  {suite.name}: {suite.status} ({suite.duration_s:.1f}s)" + (f" {suite.error}" if suite.error else ""), err=True)
