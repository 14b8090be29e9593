"""``robust audit``: run suites on a model and a dataset, write reports, and fail a CI job on gates.

Exit codes: 0 every gate passed and no suite errored; 1 a gate failed; 2 bad usage or input;
3 a suite errored (0 with ``--allow-errors``); 130 interrupted (what finished is saved: rerun
with ``--resume``).
"""
from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource

from robust.cli.common import announce_suite, device_option, quiet_option, seed_option, threads_option


def _floats(text: str | None, name: str) -> list[float] | None:
    from robust.errors import InputError
    from robust.registry import parse_number

    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise InputError(name, "comma-separated numbers", text)
    return [parse_number(p, name) for p in parts]


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def suites_help() -> str:
    from robust.audit import load_suites

    registry = load_suites()
    lines = ["suites (use with --suite; options as name:target@value,key=value):"]
    for name in registry.names():
        lines.append(f"  {name:<12} {registry.meta(name).get('description', '')}")
    return "\n".join(lines)


@click.command(context_settings={"max_content_width": 100})
@click.option("--model", "-m", default=None, help="Checkpoint (model or model.safetensors), .onnx file, timm:<name> or "
              "architecture name (with --weights), or package.module:attribute.")
@click.option("--data", "-d", default=None, help="Data: synthetic:<split>[,size=..], digits[:test], an image folder, .npz or .pt.")
@click.option("--generator", "-g", default=None, help="Model for the natural, natra and sage suites: a generator or swap model file, 'demo' or 'demo-swap'.")
@click.option("--suite", "-s", "suites", multiple=True, help="A suite spec, repeatable: clean, shift, corruptions, "
              "corruptions:fog@3, pgd:linf@8/255,steps=10, square:linf@8/255,queries=500, transforms, natural, sage. "
              "Default: clean shift corruptions pgd:linf@8/255 transforms (+ natural sage with a generator).")
@click.option("--gate", "gates", multiple=True, help="A threshold, repeatable: 'clean.acc>=0.9', 'pgd.linf_8.acc>=0.3'.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file with the same settings (command-line values replace the file's).")
@click.option("--out", "-o", default="robust-audit", show_default=True, help="Folder for report.json, index.html, report.md, junit.xml.")
@click.option("--max-samples", "-n", "--n", "max_samples", type=click.IntRange(1), default=None, help="Evaluate at most this many images (class-balanced).")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds; suites not started by then are reported as skipped.")
@click.option("--resume", is_flag=True, help="Keep the finished suites of the report in --out and run the rest.")
@click.option("--allow-errors", is_flag=True, help="Exit 0 even when a suite errored (gates still count).")
@click.option("--format", "formats", default="json,html,md,junit", show_default=True, help="Report formats to write.")
@click.option("--failures", type=click.IntRange(0, 200), default=8, show_default=True, help="Failure examples kept per case.")
@click.option("--num-classes", type=click.IntRange(1), default=None, help="For architecture names and timm models (default: the data's).")
@click.option("--input-size", default=None, help="C,H,W for nn.Modules and ONNX files with dynamic sizes (default: the data's).")
@click.option("--weights", default=None, help="Local state dict (.safetensors or .pt) for an architecture or timm name.")
@click.option("--mean", default=None, help="Per-channel mean the model expects, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Per-channel std the model expects.")
@click.option("--list-suites", is_flag=True, help="List the registered suites and exit.")
@quiet_option
@threads_option
@seed_option
@device_option
@click.pass_context
def audit(ctx: click.Context, model: str | None, data: str | None, generator: str | None, suites: tuple[str, ...],
          gates: tuple[str, ...], config_path: str | None, out: str, max_samples: int | None, time_budget: float | None,
          resume: bool, allow_errors: bool, formats: str, failures: int, num_classes: int | None, input_size: str | None,
          weights: str | None, mean: str | None, std: str | None, list_suites: bool, quiet: bool, threads: int | None,
          seed: int, device: str) -> None:
    """Audit a classifier: run suites, write reports, exit non-zero when a gate fails.

    \b
    Examples:
      robust audit -m runs/clf -d synthetic:test_iid -s clean -s shift -s pgd:linf@8/255 \\
          --gate "clean.acc>=0.9" --gate "pgd.linf_8.acc>=0.3" -o audit
      robust audit -c audit.toml --resume
    Exit codes: 0 pass, 1 a gate failed, 2 bad input, 3 a suite errored, 130 interrupted.
    """
    from robust.errors import InputError

    if list_suites:
        click.echo(suites_help())
        return
    from reports import ALL_FORMATS, FORMATS, format_summary
    from robust.audit import AuditConfig, exit_code, load_config, run_audit

    settings: dict[str, Any] = load_config(config_path) if config_path else {}
    cli_values = {"model": model, "data": data, "generator": generator, "suites": list(suites), "gates": list(gates), "out": out,
                  "seed": seed, "max_samples": max_samples, "time_budget": time_budget, "device": device, "failures": failures,
                  "resume": resume, "allow_errors": allow_errors, "formats": formats.split(",")}
    for key, value in cli_values.items():
        param = {"suites": "suites", "gates": "gates", "formats": "formats"}.get(key, key)
        if _given(ctx, param) or key not in settings:
            settings[key] = value
    if not settings.get("model") or not settings.get("data"):
        raise InputError("--model and --data", "both (on the command line or in --config)",
                         f"model={settings.get('model')!r}, data={settings.get('data')!r}")
    chosen_formats = [f.strip() for f in settings["formats"] if f.strip()]
    for f in chosen_formats:
        FORMATS.get(f)
    options: dict[str, Any] = dict(settings.get("model_options", {}))
    for key, value in (("num_classes", num_classes), ("weights", weights)):
        if value is not None:
            options[key] = value
    for key, text in (("input_size", input_size), ("mean", mean), ("std", std)):
        values = _floats(text, f"--{key.replace('_', '-')}")
        if values is not None:
            options[key] = [int(v) for v in values] if key == "input_size" else values

    color = sys.stdout.isatty()

    try:
        config = AuditConfig(
            settings.get("suites") or None, gates=settings.get("gates", []), out=settings["out"], seed=int(settings["seed"]),
            resume=bool(settings["resume"]), max_samples=settings.get("max_samples"), device=settings["device"],
            time_budget=settings.get("time_budget"), formats=chosen_formats or list(ALL_FORMATS),
            failures_per_case=int(settings["failures"]), model_options=options, progress=False if quiet else None,
        )
        result = run_audit(settings["model"], settings["data"], config, generator=settings.get("generator"), on_suite=None if quiet else announce_suite)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished suites are saved in {settings['out']}/report.json; rerun with --resume", err=True)
        ctx.exit(130)
    click.echo(format_summary(result, settings["out"], color=color))
    ctx.exit(exit_code(result, allow_errors=bool(settings["allow_errors"])))
