"""Benchmark the generator: training throughput (kimg/s) of a preset and inference images/s at batch 256.

Baselines in the same process: inference with the grouped ("fused") modulated convolution vs the
scale-conv-rescale form, and training with ADA off (p = 0) vs on (p = 0.5).

Usage: python benchmarks/bench_gan.py --device cpu --json gan.json
       python benchmarks/bench_gan.py --device cuda --preset synthetic32 --steps 200
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robust.gan import Generator, Trainer, TrainingData, preset  # noqa: E402
from robust.gan.conditioning import Conditioning  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fake_data(resolution: int, n: int = 4096) -> TrainingData:
    """Random uint8 images with synthetic-benchmark conditioning (throughput does not depend on content)."""
    g = torch.Generator().manual_seed(0)
    cond = Conditioning([("class", [str(i) for i in range(10)]), ("texture", list("abcde")), ("fill", list("abc")), ("mark", list("abcde"))])
    images = torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8)
    return TrainingData(images, cond.encode(cond.sample(n, g)), cond, "random", "")


def train_throughput(name: str, device: torch.device, steps: int, warmup: int, p: float | None) -> dict[str, float]:
    config = preset(name)
    trainer = Trainer(config, fake_data(config.resolution), seed=0, device=device)
    for _ in range(warmup):
        trainer.step()
    if p is not None:
        trainer.ada.p = p
        trainer.ada.interval = 10 ** 9  # hold p fixed while timing
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    sync(device)
    seconds = time.perf_counter() - start
    images = steps * config.batch
    return {"img_per_s": images / seconds, "kimg_per_s": images / seconds / 1000, "kimg_per_h": images / seconds * 3.6,
            "s_per_step": seconds / steps, "batch": config.batch}


@torch.no_grad()
def inference(name: str, device: torch.device, batch: int, repeats: int, fused: bool) -> float:
    config = preset(name)
    torch.manual_seed(0)
    cond = Conditioning([("class", [str(i) for i in range(10)]), ("texture", list("abcde")), ("fill", list("abc")), ("mark", list("abcde"))])
    G = Generator(**config.generator_kwargs(cond.c_dim), conditioning=cond).to(device).eval()
    z = torch.randn(batch, G.z_dim, device=device)
    c = cond.encode(cond.sample(batch, torch.Generator().manual_seed(0))).to(device)
    G.synthesis(G.mapping(z, c), fused=fused)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        G.synthesis(G.mapping(z, c), fused=fused)
    sync(device)
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="synthetic32")
    parser.add_argument("--steps", type=int, default=None, help="Timed training steps (default: 20 on CPU, 200 on GPU).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    steps = args.steps or (200 if gpu else 20)
    warmup = 20 if gpu else 3
    repeats = 20 if gpu else 3
    hardware = torch.cuda.get_device_name(device) if gpu else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device {device} ({hardware}), preset {args.preset}, torch {torch.__version__}")

    ada_off = train_throughput(args.preset, device, steps, warmup, p=0.0)
    ada_on = train_throughput(args.preset, device, steps, warmup, p=0.5)
    print(f"training, ADA p=0:   {ada_off['img_per_s']:8.1f} img/s = {ada_off['kimg_per_s']:.4f} kimg/s ({ada_off['kimg_per_h']:.1f} kimg/h), "
          f"{ada_off['s_per_step'] * 1000:.1f} ms/step at batch {ada_off['batch']}")
    print(f"training, ADA p=0.5: {ada_on['img_per_s']:8.1f} img/s = {ada_on['kimg_per_s']:.4f} kimg/s "
          f"(x{ada_on['img_per_s'] / ada_off['img_per_s']:.2f} of p=0)")
    fused = inference(args.preset, device, 256, repeats, fused=True)
    plain = inference(args.preset, device, 256, repeats, fused=False)
    print(f"inference at batch 256: fused {fused:9.1f} img/s, scale-conv-rescale {plain:9.1f} img/s "
          f"(fused x{fused / plain:.2f}); the default is fused for inference on a GPU only")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device), "hardware": hardware, "preset": args.preset,
        "torch": torch.__version__, "command": " ".join(sys.argv), "training_ada_off": ada_off, "training_ada_on": ada_on,
        "inference_img_per_s": {"fused": fused, "unfused": plain, "batch": 256},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
