"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def seed_option(func: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")(func)


def device_option(func: F) -> F:
    return click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda or cuda:N.")(func)


def progress(iterable: Any = None, total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None) -> Any:
    """A tqdm progress bar on stderr that stays quiet when stderr is not a terminal (CI logs)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
