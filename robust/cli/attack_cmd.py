"""``robust attack``: run a pixel attack (optionally over a grid of budgets) and keep the failures."""
from __future__ import annotations

import time

import click

from robust.cli.common import device_option, progress, quiet_option, seed_option, threads_option


@click.command()
@click.option("--model", "model_spec", required=True,
              help="A robust checkpoint, an .onnx file, or timm:<name> / an architecture name with --weights.")
@click.option("--weights", default=None, type=click.Path(dir_okay=False), help="Local state dict for timm:<name> or an architecture.")
@click.option("--data", "data_spec", required=True,
              help="An image folder, a .npz/.pt file, or a built-in name (synthetic:test_shift, digits:test).")
@click.option("--attack", "attack_spec", default="pgd:linf@8/255", show_default=True,
              help="Attack spec: fgsm, pgd, apgd or square, then :norm@eps and ,key=value options (pgd:l2@0.5,steps=20).")
@click.option("--eps-grid", default=None,
              help="Comma-separated budgets for an epsilon sweep (0,1/255,2/255,4/255,8/255); the attack's own eps is then ignored.")
@click.option("-n", "--n", "--max-samples", "max_samples", type=click.IntRange(1), default=None, help="Attack a seeded, class-balanced subset of this size.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per model call (default: the model's).")
@click.option("--max-failures", type=click.IntRange(0), default=64, show_default=True, help="Failures shown in failures.png.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for attack.json, failures.safetensors/.json and failures.png.")
@quiet_option
@threads_option
@seed_option
@device_option
def attack(model_spec: str, weights: str | None, data_spec: str, attack_spec: str, eps_grid: str | None, max_samples: int | None,
           batch_size: int | None, max_failures: int, out: str, quiet: bool, threads: int | None, seed: int, device: str) -> None:
    """Attack a classifier and write robust accuracy, the failing adversarial images and a gallery of them.

    \b
    Example: robust attack --model robust-demo/classifier --data synthetic:test_shift \\
               --attack pgd:linf@8/255 --eps-grid 0,1/255,2/255,4/255,8/255 --out attack-out
    """
    import torch

    from attacks import epsilon_sweep, format_eps, get_attack
    from robust.data import load_dataset
    from robust.errors import InputError
    from robust.io import check_writable, save_checkpoint, write_json
    from robust.models import load_classifier
    from robust.registry import parse_number
    from robust.seeding import resolve_device

    # The attack, the budgets and the output folder are checked before anything is loaded.
    spec = get_attack(attack_spec, **({"batch_size": batch_size} if batch_size else {}))
    grid = [parse_number(text, "--eps-grid") for text in eps_grid.split(",") if text.strip()] if eps_grid else None
    for eps in grid or []:
        try:
            if eps != 0:  # 0 is the clean point of a sweep; any other budget must suit the attack
                spec.with_eps(eps)
        except InputError as exc:
            raise InputError("--eps-grid", exc.expected, exc.got) from None
    out_dir = check_writable(out, "--out")
    dev = resolve_device(device)
    data = load_dataset(data_spec, n=max_samples, seed=seed)
    clf = load_classifier(model_spec, data=data, weights=weights, device=dev)
    clf.check_compatible(data)
    bars = False if quiet else None
    start = time.time()
    report: dict = {"model": clf.describe(), "data": {"name": data.name, "n": len(data), "fingerprint": data.fingerprint()},
                    "attack": spec.spec, "seed": seed}
    if grid:
        sweep = epsilon_sweep(clf, data.images, data.labels, spec, grid, seed=seed,
                              progress=lambda it: progress(it, total=len(it), desc="eps", unit="eps", enabled=bars))
        report["sweep"] = sweep.summary()
        adversarial, predictions, broken = sweep.adversarial, sweep.predictions, sweep.failures()
        min_eps = sweep.min_eps
        for e, acc in zip(sweep.eps, sweep.robust_accuracy):
            click.echo(f"  eps {format_eps(e):>7}: robust accuracy {acc:.3f}")
    else:
        size = batch_size or clf.batch_size
        parts = []
        for first in progress(range(0, len(data), size), desc=spec.name, unit="batches", enabled=bars):
            ids = torch.arange(first, min(first + size, len(data)))
            parts.append(spec(clf, data.images[ids], data.labels[ids], seed=seed, sample_ids=ids))
        adversarial = torch.cat([p.adversarial.cpu() for p in parts])
        predictions = torch.cat([p.predictions.cpu() for p in parts])
        success = torch.cat([p.success.cpu() for p in parts])
        clean_correct = torch.cat([p.clean_correct.cpu() for p in parts])
        broken = (success & clean_correct).nonzero().squeeze(1)
        min_eps = torch.where(clean_correct, torch.where(success, spec.eps, float("inf")), 0.0)
        report["result"] = {
            "attack": spec.spec, "norm": spec.norm, "eps": spec.eps, "n": len(data),
            "clean_accuracy": float(clean_correct.float().mean()),
            "robust_accuracy": float((predictions == data.labels).float().mean()),
            "failures": int(broken.numel()), "queries": int(sum(p.queries for p in parts)),
        }
        click.echo(f"  clean accuracy {report['result']['clean_accuracy']:.3f}, robust accuracy "
                   f"{report['result']['robust_accuracy']:.3f} under {spec.spec}")
    report["seconds"] = round(time.time() - start, 3)
    report["device"] = str(dev)
    save_checkpoint(out_dir / "failures", {
        "index": broken, "clean": data.images[broken], "adversarial": adversarial[broken],
        "labels": data.labels[broken], "predictions": predictions[broken], "min_eps": min_eps[broken].float(),
    }, {"format": "robust-attack-failures", "version": 1, "attack": spec.spec, "class_names": clf.class_names, "seed": seed})
    write_json(out_dir / "attack.json", report)
    if broken.numel() and max_failures:
        from robust.plotting import image_grid_figure, save_figure

        shown = broken[:max_failures]
        names = clf.class_names
        captions = [f"{names[int(data.labels[i])]} -> {names[int(predictions[i])]}\neps {format_eps(float(min_eps[i]))}" for i in shown]
        fig = image_grid_figure(adversarial[shown], captions, title=f"{spec.name} failures ({int(broken.numel())} of {len(data)})")
        save_figure(fig, out_dir / "failures.png")
    click.echo(f"{int(broken.numel())} failures of {len(data)} images; wrote {out_dir / 'attack.json'} in {report['seconds']:.1f}s")
