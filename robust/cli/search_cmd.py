"""``robust search``: SAGE search of a generator's prompt and latent space for verified failures of a model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robust.cli.common import device_option, quiet_option, seed_option, threads_option


def failure_tensors(result: Any) -> dict[str, Any]:
    """Images (uint8), z, w and W offsets of every failure, row i = ``failures_list[i]`` of the JSON."""
    import torch

    failures = result.failures
    if not failures:
        return {}
    tensors = {"z": torch.stack([f.z for f in failures]), "w": torch.stack([f.w for f in failures])}
    if failures[0].image is not None:
        tensors["images"] = (torch.stack([f.image for f in failures]).clamp(0, 1) * 255).round().to(torch.uint8)
    if failures[0].delta is not None:
        tensors["delta"] = torch.stack([f.delta for f in failures])
    return tensors


def _load_model(spec: str, device: Any) -> Any:
    from robust.suites.sage_suite import load_oracle_spec

    # The same forms an oracle takes: a checkpoint, an .onnx file or package.module:attribute.
    return load_oracle_spec(spec, device)


@click.command(context_settings={"max_content_width": 100})
@click.option("--model", "-m", required=True, help="Model under test: a robust checkpoint, an .onnx file or package.module:attribute.")
@click.option("--generator", "-g", default="demo", show_default=True, help="Conditional generator: 'demo' or a checkpoint path.")
@click.option("--oracle", "oracles", multiple=True,
              help="Oracle classifier, repeatable (an ensemble); 'synthetic' is the shipped oracle of the synthetic benchmark "
                   "(the default for a generator of the benchmark).")
@click.option("--budget-queries", type=click.IntRange(1), default=2000, show_default=True, help="Images the generator may synthesise.")
@click.option("--budget-seconds", type=click.FloatRange(min=0, min_open=True), default=None, help="Wall-time limit of the search.")
@click.option("--space", type=click.Choice(["z", "w", "w+"]), default="w", show_default=True, help="Latent space searched.")
@click.option("--method", type=click.Choice(["auto", "gradient", "random"]), default="auto", show_default=True,
              help="gradient: SAGE's search; random: fresh samples under the same checks (models without gradients, "
                   "e.g. ONNX); auto: gradient when the model has gradients, else random.")
@click.option("--prompt-groups", default="auto", show_default=True,
              help="Token groups the prompt search may change, joined by + (e.g. class+texture), 'auto' (the attribute groups, "
                   "or the class when there are none), 'all' or 'none'.")
@click.option("--prompt", "prompts", multiple=True, help="Fixed starting prompt, repeatable: class=square,texture=stripes.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Search chains run together.")
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="Latent steps before a chain restarts.")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True,
              help="Step length as a fraction of the prior's typical norm.")
@click.option("--oracle-threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Oracle probability of the prompt's class a failure needs.")
@click.option("--min-confidence", type=click.FloatRange(0, 0.999), default=0.0, show_default=True,
              help="The model's probability for its wrong class a failure needs (0: any misclassification).")
@click.option("--checks", default="auto", show_default=True,
              help="Candidate checks joined by +: realism (nearest real images of --real), twins (nearby latents fail too), "
                   "reinversion (the generator's encoder), stability (one-pixel shifts and a slight blur still fail); 'auto': realism "
                   "when --real is given, and twins; 'none'.")
@click.option("--real", "real_data", default=None,
              help="Real images for the realism check (a data spec: a folder, .npz, synthetic:<split>, ...).")
@click.option("--reference", default=None,
              help="A classifier known to be right on real images, searched the same way to estimate the false-failure rate "
                   "(default on the synthetic benchmark: the oracle ensemble's held-out member). One of the same "
                   "architecture as MODEL, trained on real images, tracks its false failures more closely "
                   "(benchmarks/results/sage.md); give it a large --budget-queries (false failures are rare).")
@click.option("--regions", type=click.IntRange(0), default=8, show_default=True, help="Failures whose failure region is measured.")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Also run random sampling with the same budget.")
@click.option("--export", "export_modes", type=click.IntRange(0), default=3, show_default=True,
              help="Largest failure modes written as pytest regression cases under OUT/regression.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="robust-search", show_default=True,
              help="Folder for index.html, report.json, report.md, failures.json/.safetensors and regression/.")
@click.option("--format", "formats", default="json,html,md", show_default=True, help="Report formats to write.")
@quiet_option
@threads_option
@seed_option
@device_option
def search(model: str, generator: str, oracles: tuple[str, ...], budget_queries: int, budget_seconds: float | None, space: str,
           method: str, prompt_groups: str, prompts: tuple[str, ...], batch_size: int, steps: int, step_size: float, oracle_threshold: float,
           min_confidence: float, checks: str, real_data: str | None, reference: str | None, regions: int, baseline: bool,
           export_modes: int, out: str, formats: str, quiet: bool, threads: int | None, seed: int, device: str) -> None:
    """Search a generator's prompts and latents for natural failures of a model (SAGE), verified by oracles.

    \b
    Writes a report with the failure modes and their images (index.html, report.json, report.md),
    every failure (failures.json) and the largest modes as pytest regression cases
    (regression/test_*.py); failures.safetensors holds their images and latents.
    \b
    Examples:
      robust search --model runs/erm/best --generator demo --budget-queries 2000 --out search
      robust search -m model.onnx -g gen.safetensors --oracle ref1 --oracle ref2 --budget-seconds 300   # random: ONNX has no gradients
    """
    import time

    from attacks.sage import SageConfig
    from attacks.sage_regression import export_regression
    from reports import write_reports
    from robust.audit import environment, resolve_generator
    from robust.io import check_writable, save_checkpoint
    from robust.results import AuditResult
    from robust.seeding import resolve_device
    from robust.data import load_dataset
    from robust.suites.sage_suite import default_oracles, default_verification, run_sage, search_groups, search_method, suite_result

    folder = check_writable(out, "--out")
    dev = resolve_device(device)
    G = resolve_generator(generator, dev)
    clf = _load_model(model, dev)
    judges = default_oracles(G, list(oracles), dev)
    asked, method = method, search_method(method, clf)
    if asked == "auto" and method == "random":
        click.echo(f"{clf.name} has no gradients: sampling at random under the same checks (--method random)", err=True)
    if method == "random":
        baseline = False  # the run itself is the random baseline
    config = SageConfig(method=method, space=space, budget_queries=budget_queries, budget_seconds=budget_seconds, batch_size=batch_size, steps=steps,
                        step_size=step_size, search_groups=search_groups(prompt_groups, G), oracle_threshold=oracle_threshold,
                        min_confidence=min_confidence,
                        prompts=tuple(G.conditioning.parse(p) for p in prompts) or None)
    reals = load_dataset(real_data) if real_data else None
    verification = default_verification(G, judges, checks=checks, reals=reals, reference=reference, device=dev, seed=seed)
    started = time.time()
    run = run_sage(G, clf, judges, config, seed=seed, verification=verification, regions=regions, baseline=baseline,
                   progress=False if quiet else None)
    suite = suite_result(run)
    suite.duration_s = time.time() - started
    env = environment(seed, dev, None)
    env["generator"] = {"source": generator}
    env["oracles"] = [o.name for o in judges]
    result = AuditResult(suites=[suite], model={**clf.describe(), "source": model},
                         data={"name": f"generated by {generator}", "source": generator}, environment=env, created=started)
    write_reports(result, folder, [f.strip() for f in formats.split(",") if f.strip()])
    save_checkpoint(folder / "failures", failure_tensors(run.result),
                    {"format": "robust-sage-failures", "version": 1, **run.result.to_dict(), "modes": [m.to_dict() for m in run.modes],
                     "verification": suite.details.get("verification"), "false_failure_estimate": suite.details.get("false_failure_estimate")})
    # A model given as a file is recorded by absolute path, so the exported tests run from anywhere.
    on_disk = Path(model).exists() or Path(model + ".json").exists()
    model_source = str(Path(model).resolve()) if on_disk else model
    generator_source = generator if generator == "demo" else str(Path(generator).resolve())
    written = []
    for mode in run.modes[:export_modes]:
        _, test_path = export_regression(run.result, mode, folder / "regression", generator=G, generator_source=generator_source,
                                         model_source=model_source)
        written.append(test_path)
    r = run.result
    click.echo(f"{len(r.failures)} verified failures in {r.queries} generator queries ({r.failures_per_1k_queries:.1f} per 1k, "
               f"{r.seconds:.1f}s)" + (f"; random sampling {run.baseline.failures_per_1k_queries:.1f} per 1k" if run.baseline else ""))
    from robust.suites.sage_suite import verification_notes

    for line in verification_notes(run):
        click.echo(line)
    for m in run.modes[:5]:
        click.echo(f"  {m.count:4d}  {m.description}")
    click.echo(f"report: {folder}" + (f"; regression tests: {folder / 'regression'}" if written else ""))
