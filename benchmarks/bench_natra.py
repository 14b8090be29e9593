"""NaTra on the synthetic benchmark: inversion quality and speed, direction quality, NaturalTransform throughput.

Three parts, each against a baseline run in the same process:

* ``inversion``: ``test_shift`` images inverted by optimisation only from the mean code with 10x the
  steps (the baseline), by the encoder alone, by encoder + shifting, and by encoder + shifting +
  expansion; mean PSNR/SSIM and time per image (bars: expansion >= 30 dB at 32x32; encoder +
  shifting reaches the baseline's PSNR in >= 10x less time).
* ``directions``: for each finder, ``--candidates`` directions are found, their ranges calibrated,
  scored for class preservation (the shipped oracle as judge) and selected; the first ``--top``
  kept ones are measured with the ground-truth factor regressor (dominant factor, purity, oracle
  class kept). Bars: every nuisance factor has a kept direction with purity >= 0.7 and class kept
  >= 0.95; no kept direction changes the oracle class for more than 5% of samples.
* ``throughput``: NaturalTransform images/s per mode at ``--batch`` (baseline: one plain
  synthesis pass of the same batch).

    python benchmarks/bench_natra.py --generator demo --device cpu --n 32 --threads 1 --json natra.json --markdown natra.md
    python benchmarks/bench_natra.py --generator demo --device cuda --encoder train:3000 --save-encoder demo_encoder --n 512 --batch 512 --candidates 32 --json natra-gpu.json --markdown natra-gpu.md

``--encoder train:STEPS`` trains an encoder in the run (on generator samples and 10000
``synthetic:generator`` images) and ``--save-encoder`` keeps it; ``--generator`` and ``--encoder``
also take files.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.natra import NaturalTransform  # noqa: E402
from robust.data import load_dataset  # noqa: E402
from robust.gan.checkpoint import load, load_demo  # noqa: E402
from robust.gan.directions import factor_effects, find_directions, score_directions, select_directions  # noqa: E402
from robust.gan.encoder import encoder_for, generator_fingerprint, save_encoder, train_encoder  # noqa: E402
from robust.gan.inversion import InversionConfig, invert_batch  # noqa: E402
from robust.gan.latent import latent_stats, sample_ws  # noqa: E402
from robust.gan.metrics import load_factor_regressor, load_oracle  # noqa: E402
from robust.io import checkpoint_paths, read_json, write_json, write_text  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402
from robust.synthetic import FACTOR_NAMES  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"CPU {os.cpu_count()} cores ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def generator_info(G: Any, spec: str) -> dict[str, Any]:
    """Which generator was measured: its training progress (kimg) and parameter fingerprint."""
    from robust.gan.checkpoint import DEMO_GENERATOR

    info: dict[str, Any] = {"spec": spec, "fingerprint": generator_fingerprint(G)}
    path = DEMO_GENERATOR if spec == "demo" else Path(spec)
    try:
        config = read_json(checkpoint_paths(path)[1])
    except (OSError, ValueError):
        return info
    extra = config.get("extra", {}) if isinstance(config, dict) else {}
    info["kimg"] = extra.get("kimg", config.get("kimg") if isinstance(config, dict) else None)
    info["class_agreement"] = extra.get("metrics_at_export", {}).get("figures", {}).get("class_agreement")
    return info


def baseline_time_to(psnr: float, runs: list[tuple[int, float, float]]) -> tuple[float, float, str]:
    """Steps and time (ms / image) the optimisation-only baseline needs to reach ``psnr``, from its
    runs ``[(steps, psnr, ms), ...]``: the steps are interpolated linearly between the two runs whose
    PSNR brackets ``psnr``, and the time comes from a least-squares line through (steps, ms) of all
    runs (one run's timing noise does not decide the answer). The third value says whether that
    is exact ("="), a lower bound (">": even the longest run stays below ``psnr``) or an upper
    bound ("<": the shortest run is already above it)."""
    runs = sorted(runs)
    steps = torch.tensor([float(r[0]) for r in runs], dtype=torch.float64)
    ms = torch.tensor([r[2] for r in runs], dtype=torch.float64)
    if len(runs) > 1:
        slope = float(((steps - steps.mean()) * (ms - ms.mean())).sum() / (steps - steps.mean()).square().sum())
        intercept = float(ms.mean()) - slope * float(steps.mean())
    else:
        slope, intercept = float(ms[0] / steps[0]), 0.0
    if psnr <= runs[0][1]:
        k, bound = float(runs[0][0]), "<"
    else:
        k, bound = float(runs[-1][0]), ">"
        for (k0, p0, _), (k1, p1, _) in zip(runs, runs[1:]):
            if p0 < psnr <= p1:
                k, bound = k0 + (k1 - k0) * (psnr - p0) / (p1 - p0), "="
                break
    return k, intercept + slope * k, bound


def bench_inversion(G: Any, encoder: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    data = load_dataset("synthetic:test_shift", n=args.n, seed=args.seed)
    images = data.images.to(device)
    stats = latent_stats(G, seed=args.seed)
    rows: dict[str, dict[str, float]] = {}
    baseline_steps = [int(k) for k in str(args.baseline_steps).split(",")]
    variants = [(f"optimisation only (mean code), {k} steps" if len(baseline_steps) > 1 else "optimisation only (mean code)",
                 None, k, None) for k in baseline_steps]
    variants += [("encoder only", encoder, 0, None),
                 ("encoder + shifting", encoder, args.steps, None),
                 ("encoder + shifting + expansion", encoder, args.steps, args.expand_res),
                 ("shifting only (mean code)", None, args.steps, None)]
    invert_batch(G, images[:2], encoder=encoder, steps=2, seed=args.seed, stats=stats)  # warm-up: first-call costs are not timed
    for name, enc, steps, expand in variants:
        if enc is None and "encoder" in name:
            continue
        times = []
        for _ in range(max(1, args.timing_repeats)):  # the fastest of the repeats: the least disturbed by other load
            sync(device)
            start = time.perf_counter()
            result = invert_batch(G, images, encoder=enc, steps=steps, expand_res=expand, seed=args.seed, stats=stats, batch_size=args.batch)
            sync(device)
            times.append(time.perf_counter() - start)
        rows[name] = {"steps": steps, "expand_res": expand, "psnr": float(result.psnr.mean()), "ssim": float(result.ssim.mean()),
                      "ms_per_image": 1000 * min(times) / images.shape[0]}
        print(f"  {name:<44} steps {steps:4d}  PSNR {rows[name]['psnr']:6.2f} dB  SSIM {rows[name]['ssim']:.4f}  "
              f"{rows[name]['ms_per_image']:9.1f} ms/image", flush=True)
    base = rows[variants[0][0]]
    key = "encoder + shifting" if "encoder + shifting" in rows else "shifting only (mean code)"
    out: dict[str, Any] = {"n": int(images.shape[0]), "rows": rows, "config": InversionConfig().optimisation(), "timing_repeats": args.timing_repeats,
                           "speedup_vs_baseline": base["ms_per_image"] / rows[key]["ms_per_image"],
                           "psnr_gap_vs_baseline": rows[key]["psnr"] - base["psnr"], "compared": key,
                           "baseline": variants[0][0]}
    # The bar's own question: how much longer does the baseline need to reach the same PSNR?
    runs = [(steps, rows[name]["psnr"], rows[name]["ms_per_image"]) for name, _, steps, _ in variants[:len(baseline_steps)]]
    k, ms, bound = baseline_time_to(rows[key]["psnr"], runs)
    out["time_to_same_psnr"] = {"baseline_steps": k, "baseline_ms_per_image": ms, "bound": bound, "ratio": ms / rows[key]["ms_per_image"]}
    expanded = rows.get("encoder + shifting + expansion")
    out["bar_expansion_30db"] = bool(expanded and expanded["psnr"] >= 30.0)
    ratio = out["time_to_same_psnr"]["ratio"]
    out["bar_reaches_baseline_10x_faster"] = bool(ratio >= 10 and bound in ("=", ">"))
    print(f"  {key}: {out['speedup_vs_baseline']:.1f}x faster than {variants[0][0]}, PSNR {out['psnr_gap_vs_baseline']:+.2f} dB; "
          f"the baseline needs {'at least ' if bound == '>' else 'at most ' if bound == '<' else ''}{k:.0f} steps, {ratio:.1f}x its time, "
          f"to reach the same PSNR", flush=True)
    return out


def bench_directions(G: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    oracle = load_oracle(device=device)
    regressor = load_factor_regressor(device=device)
    stats = latent_stats(G, seed=args.seed)
    out: dict[str, Any] = {}
    for method in args.finders.split(","):
        start = time.perf_counter()
        options = {"steps": args.householder_steps} if method == "householder" else {}
        found = find_directions(G, method, args.candidates, args.layers, seed=args.seed, stats=stats, class_free=args.class_free,
                                **options)
        found = score_directions(G, found, judge=oracle, n=args.score_n, seed=args.seed)
        found = select_directions(found, min_preservation=args.min_preservation)
        kept_idx = found.kept.nonzero().squeeze(1)
        # The kept directions first (finder order), then the best-scored others, so the table always has --top rows.
        rest = [i for i in torch.argsort(found.scores["score"], descending=True, stable=True).tolist() if i not in kept_idx.tolist()]
        measured = (kept_idx.tolist() + rest)[: args.top]
        seconds = time.perf_counter() - start
        top = found.select(measured)
        effects = factor_effects(G, top, regressor=regressor, oracle=oracle, n=args.effect_n, seed=args.seed)
        rows = []
        for effect, idx in zip(effects, measured):
            rows.append({"index": idx, "name": found.names[idx], "kept": bool(found.kept[idx]), "dominant": effect["dominant"],
                         "purity": effect["purity"], "class_kept": effect["class_kept"], "change": effect["change"],
                         "range": [float(found.ranges[idx, 0]), float(found.ranges[idx, 1])],
                         "preservation": float(found.scores["class_preservation"][idx]),
                         "alignment": float(found.scores["class_alignment"][idx])})
        kept_rows = [r for r in rows if r["kept"]]
        covered = sorted({r["dominant"] for r in kept_rows if r["purity"] >= 0.7 and r["class_kept"] >= 0.95})
        breaking = [r["name"] for r in kept_rows if r["class_kept"] < 0.95]
        out[method] = {"candidates": args.candidates, "kept": int(found.kept.sum()), "measured": len(rows), "seconds": seconds,
                       "rows": rows, "covered": covered, "missing": [f for f in FACTOR_NAMES if f not in covered],
                       "class_breaking_kept": breaking, "meta": {k: v for k, v in found.meta.items() if k != "generator_fingerprint"},
                       "bar_every_factor_covered": not [f for f in FACTOR_NAMES if f not in covered],
                       "bar_no_kept_direction_breaks_class": int(found.kept.sum()) > 0 and not breaking}
        print(f"  {method}: {int(found.kept.sum())}/{args.candidates} kept, {seconds:.0f} s; factors covered (purity>=0.7, class kept>=0.95): "
              f"{', '.join(covered) or 'none'}; kept directions changing the class >5%: {len(breaking)}", flush=True)
        for r in rows:
            print(f"    {r['name']:<16} {'kept' if r['kept'] else '    '} -> {r['dominant']:<15} purity {r['purity']:.2f}  "
                  f"class kept {r['class_kept']:.3f}  preservation {r['preservation']:.3f}  alignment {r['alignment']:.3f}", flush=True)
    return out


def bench_throughput(G: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    oracle = load_oracle(device=device)
    stats = latent_stats(G, seed=args.seed)
    directions = find_directions(G, "sefa", 16, seed=args.seed, stats=stats, calibrate_kwargs={"n": 32})
    ws, _ = sample_ws(G, args.batch, seed=args.seed)
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    labels = oracle.predict(images)

    def timed(fn: Any) -> float:
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        sync(device)
        return (time.perf_counter() - start) / args.repeats

    def plain() -> None:
        with torch.no_grad():
            G.synthesis(ws)

    base = timed(plain)
    out: dict[str, Any] = {"batch": args.batch, "synthesis_images_per_s": args.batch / base}
    print(f"  plain synthesis: {args.batch / base:9.1f} images/s", flush=True)
    for mode in ("random", "worst_of_k", "gradient"):
        nt = NaturalTransform(G, directions, mode, classifier=oracle, k=4, steps=5)
        seconds = timed(lambda nt=nt: nt(images, labels, ws=ws, seed=0))
        out[mode] = {"images_per_s": args.batch / seconds, "cost_vs_synthesis": seconds / base}
        print(f"  NaturalTransform {mode:<10}: {args.batch / seconds:9.1f} images/s ({seconds / base:.1f}x a synthesis pass)", flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    """The figures as markdown tables (for benchmarks/results/natra.md)."""
    gen = result["generator"]
    lines = [f"- date {result['date']}, machine: {result['machine']}, torch {result['torch']}",
             f"- generator: {gen['spec']} (kimg {gen.get('kimg')}, fingerprint {gen['fingerprint']}, "
             f"oracle class agreement at export {gen.get('class_agreement')})",
             f"- command: `{result['command']}`", ""]
    inv = result.get("inversion")
    if inv:
        lines += [f"### Inversion ({inv['n']} `test_shift` images, 32x32)", "",
                  "| variant | steps | PSNR (dB) | SSIM | ms / image |", "|---|---:|---:|---:|---:|"]
        for name, row in inv["rows"].items():
            steps = f"{row['steps']}" + (f" (+{row['steps']} expansion @{row['expand_res']})" if row["expand_res"] else "")
            lines.append(f"| {name} | {steps} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['ms_per_image']:.1f} |")
        same = inv.get("time_to_same_psnr")
        lines += ["", f"{inv['compared']} vs {inv.get('baseline', 'the baseline')}: {inv['speedup_vs_baseline']:.1f}x less time, "
                      f"PSNR {inv['psnr_gap_vs_baseline']:+.2f} dB."]
        if same:
            qualifier = {"=": "", ">": "at least ", "<": "at most "}[same["bound"]]
            lines.append(f"The baseline needs {qualifier}{same['baseline_steps']:.0f} steps to reach the same PSNR: "
                         f"{qualifier}{same['ratio']:.1f}x the time ({same['baseline_ms_per_image']:.1f} ms / image, "
                         f"from a line fitted through its runs' times).")
        lines.append("")
    dirs = result.get("directions")
    if dirs:
        for method, part in dirs.items():
            lines += [f"### Directions: {method} ({part['kept']}/{part['candidates']} kept, {part['seconds']:.0f} s)", "",
                      f"Factors covered (purity >= 0.7, oracle class kept >= 0.95): {', '.join(part['covered']) or 'none'}; "
                      f"kept directions changing the class for > 5%: {len(part['class_breaking_kept'])}.", "",
                      "| direction | kept | dominant factor | purity | oracle class kept | preservation score | class alignment |",
                      "|---|---|---|---:|---:|---:|---:|"]
            for r in part["rows"]:
                lines.append(f"| {r['name']} | {'yes' if r['kept'] else 'no'} | {r['dominant']} | {r['purity']:.2f} | {r['class_kept']:.3f} | "
                             f"{r['preservation']:.3f} | {r['alignment']:.3f} |")
            lines.append("")
    thr = result.get("throughput")
    if thr:
        lines += [f"### NaturalTransform throughput (batch {thr['batch']}, 32x32, {result['device']})", "",
                  "| mode | images / s | time vs one synthesis pass |", "|---|---:|---:|",
                  f"| plain synthesis (baseline) | {thr['synthesis_images_per_s']:.1f} | 1.0x |"]
        for mode in ("random", "worst_of_k", "gradient"):
            lines.append(f"| {mode} | {thr[mode]['images_per_s']:.1f} | {thr[mode]['cost_vs_synthesis']:.1f}x |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="demo", help="'demo' or a generator/snapshot checkpoint.")
    parser.add_argument("--encoder", default="auto", help="auto, none, an encoder file, or train:STEPS (train one here).")
    parser.add_argument("--save-encoder", default=None, help="With --encoder train:STEPS, also write the encoder here (safetensors + JSON).")
    parser.add_argument("--parts", default="inversion,directions,throughput")
    parser.add_argument("--n", type=int, default=64, help="test_shift images inverted.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--baseline-steps", default="300",
                        help="Steps of the optimisation-only baseline; several (e.g. 100,130,160) give the time it needs to reach "
                             "the encoder's PSNR by interpolation.")
    parser.add_argument("--timing-repeats", type=int, default=1, help="Time each inversion this many times and keep the fastest.")
    parser.add_argument("--expand-res", type=int, default=16)
    parser.add_argument("--finders", default="sefa,ganspace,householder")
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--top", type=int, default=16)
    parser.add_argument("--score-n", type=int, default=128)
    parser.add_argument("--effect-n", type=int, default=128)
    parser.add_argument("--min-preservation", type=float, default=0.95)
    parser.add_argument("--layers", default=None,
                        help="W+ layers the directions act on: all (default), coarse, middle, fine, 'a-b' or '1,3,5'")
    parser.add_argument("--class-free", action="store_true", help="Remove the class subspace from every direction first.")
    parser.add_argument("--householder-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64, help="Throughput batch (and inversion chunk).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None, help="Also write the figures as markdown tables here.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    G = load_demo(device) if args.generator == "demo" else load(args.generator, device)
    parts = args.parts.split(",")
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(device), "device": str(device),
                              "generator": generator_info(G, args.generator), "command": "python " + " ".join(sys.argv),
                              "torch": torch.__version__}
    print(f"NaTra benchmark on {result['machine']}, generator {result['generator']}", flush=True)
    if "inversion" in parts:
        encoder = None
        if args.encoder.startswith("train:"):
            start = time.perf_counter()
            reals = load_dataset("synthetic:generator", n=10_000, seed=args.seed + 1).images
            encoder, report = train_encoder(G, real_images=reals, steps=int(args.encoder.split(":", 1)[1]), seed=args.seed)
            result["encoder_training"] = {**report, "seconds": time.perf_counter() - start}
            if args.save_encoder:
                save_encoder(encoder, args.save_encoder, G, {"command": result["command"], "seed": args.seed, "hardware": result["machine"],
                                                             "date": result["date"], "torch": torch.__version__, "generator": args.generator,
                                                             "data": "synthetic:generator (10000 images)", "report": report})
        else:
            encoder = encoder_for(G, args.encoder)
        print(f"inversion ({'with' if encoder is not None else 'without'} an encoder):", flush=True)
        result["inversion"] = bench_inversion(G, encoder, args, device)
    if "directions" in parts:
        print("directions:", flush=True)
        result["directions"] = bench_directions(G, args, device)
    if "throughput" in parts:
        print(f"throughput (batch {args.batch}):", flush=True)
        result["throughput"] = bench_throughput(G, args, device)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        write_text(args.markdown, markdown(result))


if __name__ == "__main__":
    main()
