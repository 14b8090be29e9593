"""The ``robust`` command line: sub-commands are loaded lazily so ``robust --help`` stays fast."""
from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from robust import __version__
from robust.errors import RobustError

# name -> "module:attribute"; each sub-command lives in its own module under robust.cli.
COMMANDS: dict[str, str] = {
    "audit": "robust.cli.audit_cmd:audit",
    "report": "robust.cli.report_cmd:report",
    "attack": "robust.cli.attack_cmd:attack",
    "corrupt": "robust.cli.corrupt_cmd:corrupt",
    "data": "robust.cli.data_cmd:data",
    "demo": "robust.cli.demo_cmd:demo",
    "train": "robust.cli.train_cmd:train",
    "export": "robust.cli.export_cmd:export",
    "gan": "robust.cli.gan_cmd:gan",
    "invert": "robust.cli.natra_cmd:invert",
    "directions": "robust.cli.natra_cmd:directions",
    "search": "robust.cli.search_cmd:search",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RobustError as exc:
            # Our own errors already say what was expected and what came: one line, no traceback.
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="robust")
def cli() -> None:
    """robust: find, fix and prove the robustness of image classifiers.

    \b
    Find:  corruptions, pixel attacks, natural transformations from a generator of your data,
           SAGE search for verified natural failures.
    Fix:   harden a classifier with NaTra, adversarial and corruption training.
    Prove: audits with gates and reports (JSON, HTML, Markdown, JUnit); a pytest plugin.

    Run `robust demo` for the whole job on the built-in synthetic benchmark.
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="robust", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
