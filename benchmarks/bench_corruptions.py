"""Corruption suite vs the ``imagecorruptions`` package: throughput, closed-form parity, accuracy-drop parity.

Parts (``--parts``, default all):

* ``throughput``: all 19 corruptions x 5 severities over a batch of 224x224 and of 32x32 images,
  ours (batched, ``--device``) against ``imagecorruptions`` (one image at a time, CPU), in images/s.
* ``parity``: at 224x224, the corruptions with closed forms. Gaussian, speckle and shot noise are
  fed the reference's own noise draws (``np.random`` reseeded), brightness, contrast, saturate,
  pixelate and JPEG are deterministic: mean absolute difference in 8-bit levels. Impulse noise draws
  from scikit-image's private generator: matched statistics of the change instead.
* ``drops``: one classifier, the accuracy drop per corruption x severity under ours and under the
  reference at 224x224; Spearman correlation over the corruptions without closed forms and overall.
* ``calibration``: a classifier trained at 32x32, accuracy per corruption x severity under ours (the
  resolution rule) and under the reference (published pixel parameters), to show graded drops.

The reference must be importable: ``pip install imagecorruptions`` (the ``bench`` extra), or point
``--ic-site`` at the site-packages of a separate environment that has it (it needs scikit-image and
OpenCV, which this project does not). Three of its corruptions fail with NumPy 2 / scikit-image
>= 0.19; ``--ic-shim`` (default on) adds two compatibility aliases so they run, and the output says
which corruptions ran unpatched.

Example: python benchmarks/bench_corruptions.py --ic-site /work/venv-ic/lib/python3.11/site-packages --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment import _corruption_ops as ops  # noqa: E402
from augment.corruptions import ALL_CORRUPTIONS, get_corruption, image_seeds  # noqa: E402
from robust.seeding import derive_seed, make_generator, resolve_device  # noqa: E402

CLOSED_FORM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression")
NO_CLOSED_FORM = tuple(n for n in ALL_CORRUPTIONS if n not in CLOSED_FORM)


# -- the reference --------------------------------------------------------------------------------

def load_reference(site: str | None, shim: bool):
    if site:
        sys.path.append(site)
    import imagecorruptions
    import imagecorruptions.corruptions as icc

    probe = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    unpatched = []
    for name in ALL_CORRUPTIONS:
        try:
            imagecorruptions.corrupt(probe, corruption_name=name, severity=1)
            unpatched.append(name)
        except Exception as exc:  # the point is to record which ones fail and why
            print(f"  reference {name}: fails unpatched ({type(exc).__name__}: {exc})")
    if shim:
        if not hasattr(np, "float_"):
            np.float_ = np.float64  # removed in NumPy 2.0; used by the reference's fog
        original = icc.gaussian

        def gaussian_compat(image, sigma=1, multichannel=None, **kw):  # renamed channel_axis in scikit-image 0.19
            if multichannel:
                kw["channel_axis"] = -1
            return original(image, sigma=sigma, **kw)

        icc.gaussian = gaussian_compat
    runnable = []
    for name in ALL_CORRUPTIONS:
        try:
            imagecorruptions.corrupt(probe, corruption_name=name, severity=1)
            runnable.append(name)
        except Exception:
            pass
    return imagecorruptions.corrupt, unpatched, runnable, getattr(imagecorruptions, "__version__", "unknown")


def reference_batch(ref_corrupt, images_u8: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    out = np.empty_like(images_u8)
    for i, img in enumerate(images_u8):
        np.random.seed(derive_seed(seed, name, severity, i) % (2**32))
        out[i] = ref_corrupt(img, corruption_name=name, severity=severity)
    return out


# -- data -----------------------------------------------------------------------------------------

def photo_crops(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` random 224x224 crops of scikit-learn's two sample photographs, resized to ``size``."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    gen = make_generator(seed)
    crops = []
    for i in range(n):
        p = photos[i % 2]
        top = int(torch.randint(0, p.shape[1] - 224 + 1, (1,), generator=gen))
        left = int(torch.randint(0, p.shape[2] - 224 + 1, (1,), generator=gen))
        crops.append(p[:, top : top + 224, left : left + 224])
    x = torch.stack(crops)
    if size != 224:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return to_u8_float(x)


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_u8_float(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def from_u8(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div(255).to(device)


def ours(x: torch.Tensor, name: str, severity: float, seed: int = 0) -> torch.Tensor:
    t = get_corruption(name)
    params = {"severity": torch.full((x.shape[0],), float(severity), device=x.device), "seed": image_seeds(seed, name, x.shape[0], device=x.device)}
    return t(x, params)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- parts ----------------------------------------------------------------------------------------

def part_throughput(args, device, ref) -> dict:
    results = {}
    for size, batch in ((224, args.batch_224), (32, args.batch_32)):
        x = photo_crops(batch, size, seed=1).to(device)
        x_u8 = to_u8(x)
        rows = {}
        for name in ALL_CORRUPTIONS:
            ours(x[:2], name, 3)  # warm-up (kernels, caches)
            sync(device)
            start = time.perf_counter()
            for s in range(1, 6):
                ours(x, name, s)
            sync(device)
            ours_s = time.perf_counter() - start
            row = {"ours_images_per_s": 5 * batch / ours_s}
            if ref is not None and name in ref[2]:
                ref_n = min(batch, args.ref_images_224 if size == 224 else batch)
                start = time.perf_counter()
                for s in range(1, 6):
                    reference_batch(ref[0], x_u8[:ref_n], name, s, seed=0)
                ref_s = time.perf_counter() - start
                row["reference_images_per_s"] = 5 * ref_n / ref_s
                row["speedup"] = row["ours_images_per_s"] / row["reference_images_per_s"]
            rows[name] = row
            print(f"  {size}x{size} {name:18s} ours {row['ours_images_per_s']:9.1f} img/s" + (
                f"   reference {row['reference_images_per_s']:8.1f} img/s   x{row['speedup']:.1f}" if "speedup" in row else ""), flush=True)

        def total(names):
            t_ours = sum(1 / rows[n]["ours_images_per_s"] for n in names)
            t_ref = sum(1 / rows[n]["reference_images_per_s"] for n in names)
            return {"ours_ms_per_image_all_severities": 5000 * t_ours, "reference_ms_per_image_all_severities": 5000 * t_ref, "speedup": t_ref / t_ours}

        summary = {"ours_ms_per_image_all_severities": 5000 * sum(1 / rows[n]["ours_images_per_s"] for n in ALL_CORRUPTIONS)}
        if ref is not None:
            summary["unpatched_reference"] = total([n for n in ref[1] if "speedup" in rows[n]])
            summary["all_runnable"] = total([n for n in ALL_CORRUPTIONS if "speedup" in rows[n]])
        results[f"{size}"] = {"batch": batch, "per_corruption": rows, "summary": summary}
        print(f"  {size}x{size} summary: {json.dumps(summary)}", flush=True)
    return results


@contextlib.contextmanager
def patched(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def part_parity(args, device, ref) -> dict:
    ref_corrupt = ref[0]
    x = photo_crops(args.parity_images, 224, seed=2)
    x_u8 = to_u8(x)
    out = {}
    for name in CLOSED_FORM:
        rows = []
        for s in range(1, 6):
            seed = derive_seed(args.seed, "parity", name, s) % (2**32)
            reference = np.empty_like(x_u8)
            draws = []
            for i, img in enumerate(x_u8):
                np.random.seed(seed + i)
                reference[i] = ref_corrupt(img, corruption_name=name, severity=s)
                np.random.seed(seed + i)
                xi = img.astype(np.float64) / 255
                if name in ("gaussian_noise", "speckle_noise"):
                    draws.append(np.random.normal(size=img.shape))  # unit draws: the reference scales them by c
                elif name == "shot_noise":
                    photons = [60, 25, 12, 5, 3][s - 1]
                    draws.append(np.random.poisson(xi * photons).astype(np.float64))
            injected = torch.from_numpy(np.stack(draws)).permute(0, 3, 1, 2).float() if draws else None
            if name in ("gaussian_noise", "speckle_noise"):
                with patched(ops, "normal", lambda keys, shape: injected.to(keys.device)):
                    mine = ours(x, name, s)
            elif name == "shot_noise":
                with patched(ops, "poisson", lambda lam, keys: injected.to(lam.device)):
                    mine = ours(x, name, s)
            else:
                mine = ours(x, name, s)
            # imagecorruptions returns np.uint8(float image), which truncates; do the same to ours.
            mine_u8 = np.floor(mine.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 1e-4).astype(np.int16)
            diff = np.abs(mine_u8 - reference.astype(np.int16))
            row = {"severity": s, "mad_levels": float(diff.mean()), "max_levels": int(diff.max()), "p99_levels": float(np.percentile(diff, 99))}
            change_ref = reference.astype(np.float64) - x_u8
            change_ours = mine_u8.astype(np.float64) - x_u8
            row.update({"change_mean_ref": float(change_ref.mean()), "change_mean_ours": float(change_ours.mean()),
                        "change_std_ref": float(change_ref.std()), "change_std_ours": float(change_ours.std())})
            if name == "impulse_noise":
                row.update({"changed_fraction_ref": float((reference != x_u8).mean()), "changed_fraction_ours": float((mine_u8 != x_u8).mean())})
            rows.append(row)
        out[name] = rows
        mads = " ".join(f"{r['mad_levels']:.2f}" for r in rows)
        stds = " ".join(f"{r['change_std_ours']:.1f}/{r['change_std_ref']:.1f}" for r in rows)
        print(f"  {name:18s} MAD (8-bit levels) by severity: {mads}   change std ours/ref: {stds}", flush=True)
    return out


def train_classifier(size: int, n: int, epochs: int, seed: int, device):
    from robust.data import load_dataset
    from robust.models import build_classifier
    from robust.train import fit

    # The generator split draws every nuisance factor independently: no colour or texture shortcut
    # that would make photometric corruptions catastrophic for reasons unrelated to resolution.
    data = load_dataset(f"synthetic:generator,size={size}", n=n, seed=seed)
    clf = build_classifier("smallcnn", data.num_classes, (3, size, size), device=device, width=16)
    history = fit(clf, data, epochs=epochs, batch_size=128, seed=seed, progress=False)
    return clf, history


def accuracy(clf, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((clf.predict(images, batch_size=256).cpu() == labels).float().mean())


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def part_drops(args, device, ref) -> dict:
    from robust.data import load_dataset
    from robust.models import Classifier

    train_size = 56
    clf56, history = train_classifier(train_size, args.train_n, args.epochs, args.seed, device)
    # The same network reads 224x224 images through a 4x4 average pooling (224 -> 56).
    net = torch.nn.Sequential(torch.nn.AvgPool2d(4), clf56.network)
    clf = Classifier(net, input_size=(3, 224, 224), num_classes=clf56.num_classes, device=device)
    # The synthetic benchmark renders up to 128 px: render at 112 and upsample to 224.
    test = load_dataset("synthetic:test_shift,size=112", n=args.eval_n, seed=args.seed).resized(224)
    x = to_u8_float(test.images)
    x_u8 = to_u8(x)
    clean = accuracy(clf, x.to(device), test.labels)
    print(f"  classifier: smallcnn trained at {train_size}px ({args.train_n} images, {args.epochs} epochs, final train acc "
          f"{history[-1]['acc']:.3f}); clean accuracy at 224 {clean:.3f}", flush=True)
    drops = {}
    for name in ALL_CORRUPTIONS:
        if name not in ref[2] or name in args.drops_skip.split(","):
            continue
        mine, theirs = [], []
        for s in range(1, 6):
            a_ours = accuracy(clf, ours(x.to(device), name, s, seed=args.seed), test.labels)
            a_ref = accuracy(clf, from_u8(reference_batch(ref[0], x_u8, name, s, args.seed), device), test.labels)
            mine.append(clean - a_ours)
            theirs.append(clean - a_ref)
        drops[name] = {"ours": mine, "reference": theirs}
        print(f"  {name:18s} drop ours {' '.join(f'{d:+.2f}' for d in mine)} | reference {' '.join(f'{d:+.2f}' for d in theirs)}", flush=True)

    def corr(names):
        a = [d for n in names if n in drops for d in drops[n]["ours"]]
        b = [d for n in names if n in drops for d in drops[n]["reference"]]
        return spearman(a, b), len(a)

    rest, n_rest = corr(NO_CLOSED_FORM)
    overall, n_all = corr(ALL_CORRUPTIONS)
    print(f"  Spearman of accuracy drops: corruptions without closed form {rest:.3f} ({n_rest} points), all {overall:.3f} ({n_all} points)", flush=True)
    return {"clean_accuracy": clean, "eval_images": len(test), "drops": drops, "spearman_no_closed_form": rest,
            "spearman_all": overall, "points_no_closed_form": n_rest, "points_all": n_all}


def part_calibration(args, device, ref) -> dict:
    from robust.data import load_dataset

    clf, history = train_classifier(32, args.train_n, args.epochs, args.seed, device)
    test = load_dataset("synthetic:test_shift,size=32", n=args.eval_n_32, seed=args.seed)
    x = to_u8_float(test.images)
    clean = accuracy(clf, x.to(device), test.labels)
    print(f"  classifier: smallcnn at 32px, final train acc {history[-1]['acc']:.3f}; clean accuracy {clean:.3f}", flush=True)
    table = {}
    for name in ALL_CORRUPTIONS:
        row = {"ours": [accuracy(clf, ours(x.to(device), name, s, seed=args.seed), test.labels) for s in range(1, 6)]}
        if ref is not None and name in ref[2]:
            x_u8 = to_u8(x)
            row["reference"] = [accuracy(clf, from_u8(reference_batch(ref[0], x_u8, name, s, args.seed), device), test.labels) for s in range(1, 6)]
        table[name] = row
        print(f"  {name:18s} accuracy ours {' '.join(f'{a:.2f}' for a in row['ours'])}" + (
            f" | reference {' '.join(f'{a:.2f}' for a in row['reference'])}" if "reference" in row else ""), flush=True)
    return {"clean_accuracy": clean, "eval_images": len(test), "accuracy": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (ours; the reference always runs on the CPU)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--parts", default="throughput,parity,drops,calibration")
    parser.add_argument("--ic-site", default=None, help="site-packages folder of an environment with imagecorruptions")
    parser.add_argument("--no-ic-shim", action="store_true", help="do not patch the reference for NumPy 2 / scikit-image")
    parser.add_argument("--batch-224", type=int, default=16)
    parser.add_argument("--batch-32", type=int, default=256)
    parser.add_argument("--ref-images-224", type=int, default=16, help="images the reference times at 224 (it is slow)")
    parser.add_argument("--parity-images", type=int, default=8)
    parser.add_argument("--train-n", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--eval-n", type=int, default=100, help="test images for the 224 accuracy drops")
    parser.add_argument("--eval-n-32", type=int, default=500)
    parser.add_argument("--drops-skip", default="", help="corruptions left out of the drops part (e.g. glass_blur: the reference's pixel loop takes seconds per image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, like the single-threaded reference; 0 keeps torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    ref = None
    try:
        ref = load_reference(args.ic_site, not args.no_ic_shim)
        print(f"reference: imagecorruptions {ref[3]}; runs unpatched: {len(ref[1])}/19 "
              f"(fail: {', '.join(n for n in ALL_CORRUPTIONS if n not in ref[1]) or 'none'}); runnable with shims: {len(ref[2])}/19")
    except ImportError as exc:
        print(f"reference: imagecorruptions not importable ({exc}); comparisons are skipped")
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "command": " ".join(sys.argv)}
    if ref is not None:
        info.update({"reference_version": ref[3], "reference_unpatched": ref[1], "reference_runnable": ref[2]})
    print(json.dumps(info))
    results: dict = {"info": info}
    for part in parts:
        print(f"== {part}", flush=True)
        if part == "throughput":
            results[part] = part_throughput(args, device, ref)
        elif part in ("parity", "drops") and ref is None:
            print("  skipped: needs imagecorruptions")
        elif part == "parity":
            results[part] = part_parity(args, device, ref)
        elif part == "drops":
            results[part] = part_drops(args, device, ref)
        elif part == "calibration":
            results[part] = part_calibration(args, device, ref)
        else:
            raise SystemExit(f"unknown part {part!r}")
    if args.json:
        from robust.io import write_json

        write_json(args.json, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
