"""The CLI skeleton: help texts, data preview/info/export, one-line errors with non-zero exit."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from robust.cli import cli


def test_help_lists_subcommands_and_each_has_an_example():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "data" in result.output and "demo" in result.output
    for args in (["data", "preview", "--help"], ["data", "info", "--help"], ["data", "export", "--help"]):
        out = runner.invoke(cli, args)
        assert out.exit_code == 0 and "Example: robust data" in out.output


def test_every_command_and_subcommand_has_help_with_an_example():
    import click

    runner = CliRunner()

    def walk(group: click.Group, path: list[str]):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            yield path + [name], command
            if isinstance(command, click.Group):
                yield from walk(command, path + [name])

    seen = []
    for args, command in walk(cli, []):
        seen.append(" ".join(args))
        if isinstance(command, click.Group):
            continue
        out = runner.invoke(cli, [*args, "--help"])
        assert out.exit_code == 0, (args, out.output)
        text = " ".join(out.output.split())
        assert "Example: robust " + args[0] in text or "Examples: robust " + args[0] in text or "Examples:" in text, args
    assert {"gan train", "gan train-encoder", "invert", "directions", "audit", "search", "train"} <= set(seen)


def test_data_preview_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["data", "preview", "synthetic", "--split", "train", "-n", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_export_then_info_round_trip(tmp_path):
    out = tmp_path / "digits.npz"
    runner = CliRunner()
    assert runner.invoke(cli, ["data", "export", "digits", "--split", "test", "-n", "30", "--out", str(out)]).exit_code == 0
    assert np.load(out)["images"].shape == (30, 1, 16, 16)
    info = runner.invoke(cli, ["data", "info", str(out)])
    assert info.exit_code == 0 and "30 images" in info.output


def test_errors_are_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "robust.cli", "data", "info", "no-such-data"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: file 'no-such-data': expected")
    assert "Traceback" not in proc.stderr
