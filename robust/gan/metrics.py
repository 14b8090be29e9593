"""Generator quality without downloads: an oracle and a factor regressor trained on real renders, and the metrics built on them.

The *oracle* is a small classifier of the synthetic benchmark's shape class and the *factor
regressor* predicts every ground-truth factor (categoricals as classes; continuous factors as
values, circular ones through sin/cos); both are trained on renders of the ``generator`` split
(all factors independent) and shipped as small assets. On a class-conditional generator they
measure how often samples show the conditioned class and tokens, how well the factor
distributions cover the real ones, and a Frechet distance in the oracle's feature space. For
other data a classifier trained on that data supplies the feature space.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robust.data import ImageSet
from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import ASSETS
from robust.gan.networks import Generator
from robust.io import load_checkpoint, load_state, save_checkpoint
from robust.models import Classifier, SmallCNN, build_classifier, load_classifier, save_classifier
from robust.seeding import derive_seed, make_generator
from robust.synthetic import CLASS_NAMES, FACTORS, NUM_CLASSES, TAU, Factor, SyntheticBenchmark

ORACLE = ASSETS / "oracle_synthetic32"
FACTOR_REGRESSOR = ASSETS / "factors_synthetic32"
REGRESSOR_FORMAT = "robust-factor-regressor"

# Rotational symmetry order of each shape (0: rotation invariant). The regressor predicts the
# rotation modulo 2*pi/order, the only part an image determines.
SYMMETRY = {"disk": 0, "ring": 0, "triangle": 3, "square": 4, "cross": 4, "star": 5, "crescent": 1, "bar": 2, "corner": 1, "half_disk": 1}
# Factors only visible under a condition: (factor, condition factor, values where it is invisible).
HIDDEN_WHEN = {"mark_hue": ("mark", 0), "texture_phase": ("texture", 0)}


# -- the factor regressor -------------------------------------------------------------------------

def _layout() -> list[tuple[Factor, int, int]]:
    """(factor, first output column, number of columns) for every factor's head."""
    out, col = [], 0
    for f in FACTORS:
        width = len(f.categories) if f.is_categorical else (2 if f.circular else 1)
        out.append((f, col, width))
        col += width
    return out


class FactorRegressor(nn.Module):
    """A SmallCNN backbone with heads for the shape class and every ground-truth factor; input ``[0, 1]`` images."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.width = int(width)
        self.backbone = SmallCNN(NUM_CLASSES, 3, width)
        self.layout = _layout()
        self.factor_head = nn.Linear(4 * width, sum(w for _, _, w in self.layout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class logits [N, 10], raw factor outputs [N, D])``."""
        h = self.backbone.forward_features(x)
        return self.backbone.head(h), self.factor_head(h)

    def targets_loss(self, raw: torch.Tensor, classes: torch.Tensor, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy for categorical factors, squared error for continuous ones (masked where invisible)."""
        loss = raw.new_zeros([])
        order = torch.tensor([SYMMETRY[c] for c in CLASS_NAMES], device=raw.device)[classes]
        for f, col, width in self.layout:
            out = raw[:, col: col + width]
            value = factors[f.name].to(raw.device)
            mask = torch.ones_like(out[:, 0])
            if f.name in HIDDEN_WHEN:
                cond, hidden = HIDDEN_WHEN[f.name]
                mask = (factors[cond].to(raw.device) != hidden).float()
            if f.is_categorical:
                loss = loss + F.cross_entropy(out, value.long())
            elif f.circular:
                angle = (value - f.low) / (f.high - f.low) * TAU
                if f.name == "rotation":
                    angle = angle * order.float()
                    mask = mask * (order > 0).float()
                target = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
                loss = loss + ((out - target).square().sum(1) * mask).sum() / mask.sum().clamp_min(1)
            else:
                target = (value - f.low) / (f.high - f.low)
                loss = loss + ((out[:, 0] - target).square() * mask).sum() / mask.sum().clamp_min(1)
        return loss

    @torch.no_grad()
    def predict(self, images01: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Predicted class (``"class"``) and factors in their own units (categoricals as indices)."""
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        parts_cls, parts_raw = [], []
        for i in range(0, images01.shape[0], batch_size):
            logits, raw = self(images01[i: i + batch_size].to(device).float())
            parts_cls.append(logits.argmax(1).cpu())
            parts_raw.append(raw.float().cpu())
        self.train(was)
        classes, raw = torch.cat(parts_cls), torch.cat(parts_raw)
        out: dict[str, torch.Tensor] = {"class": classes}
        order = torch.tensor([SYMMETRY[c] for c in CLASS_NAMES])[classes].clamp_min(1).float()
        for f, col, width in self.layout:
            head = raw[:, col: col + width]
            if f.is_categorical:
                out[f.name] = head.argmax(1)
            elif f.circular:
                angle = torch.remainder(torch.atan2(head[:, 1], head[:, 0]), TAU)
                if f.name == "rotation":
                    angle = angle / order
                out[f.name] = f.low + angle / TAU * (f.high - f.low)
            else:
                out[f.name] = f.low + head[:, 0].clamp(0, 1) * (f.high - f.low)
        return out


def save_factor_regressor(model: FactorRegressor, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    config = {"format": REGRESSOR_FORMAT, "version": 1, "width": model.width, "factors": [f.name for f, _, _ in model.layout]}
    if extra:
        config["extra"] = extra
    return save_checkpoint(path, model.state_dict(), config)


def load_factor_regressor(path: str | Path = FACTOR_REGRESSOR, device: torch.device | str | None = None) -> FactorRegressor:
    """The shipped factor regressor of the synthetic benchmark (or one saved by :func:`save_factor_regressor`)."""
    tensors, config = load_checkpoint(path, REGRESSOR_FORMAT)
    if config.get("factors") != [f.name for f in FACTORS]:
        raise FileFormatError(path, "a regressor of the current synthetic factors", config.get("factors"))
    model = FactorRegressor(int(config["width"]))
    load_state(model, tensors, path, "factor regressor weights")
    model.extra = dict(config.get("extra", {}))
    model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model


def load_oracle(path: str | Path = ORACLE, device: torch.device | str | None = None) -> Classifier:
    """The shipped oracle: a SmallCNN shape classifier of 32x32 synthetic renders (a :class:`Classifier`)."""
    return load_classifier(Path(str(path) + ".json") if not str(path).endswith((".json", ".safetensors")) else path, device=device)


def oracle_available() -> bool:
    return Path(str(ORACLE) + ".safetensors").is_file() and Path(str(FACTOR_REGRESSOR) + ".safetensors").is_file()


def oracle_reads(G: Any) -> bool:
    """Whether the shipped oracle is there and reads the images ``G`` draws (32x32 RGB)."""
    return G.img_resolution == 32 and G.img_channels == 3 and oracle_available()


def train_oracle(*, n: int = 30_000, epochs: int = 6, width: int = 16, size: int = 32, batch_size: int = 128, lr: float = 3e-3,
                 seed: int = 1, device: torch.device | str = "cpu", on_epoch: Callable[[dict[str, float]], None] | None = None,
                 ) -> tuple[Classifier, FactorRegressor, dict[str, Any]]:
    """Train the factor regressor (class head included) on renders of the ``generator`` split.

    Returns the oracle (a :class:`Classifier` sharing the regressor's backbone), the regressor and
    a report with held-out accuracy per categorical factor and error per continuous one. The
    renders use benchmark seed ``seed`` so they are not the images a generator was trained on.
    """
    device = torch.device(device)
    bench = SyntheticBenchmark(size=size, seed=seed)
    classes, factors = bench.sample("generator", n)
    images = bench.render(classes, factors)
    held_classes, held_factors = SyntheticBenchmark(size=size, seed=seed + 1000).sample("generator", 2000)
    held = ImageSet(bench.render(held_classes, held_factors), held_classes, list(CLASS_NAMES), factors=held_factors, name="oracle-heldout")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "oracle-init"))
        model = FactorRegressor(width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    gen = make_generator(derive_seed(seed, "oracle-shuffle"))
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            x = images[idx].to(device)
            y = classes[idx].to(device)
            f = {k: v[idx] for k, v in factors.items()}
            for group in opt.param_groups:
                warm = min(1.0, (step + 1) / 100)
                group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
            logits, raw = model(x)
            loss = F.cross_entropy(logits, y) + model.targets_loss(raw, y, f)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * idx.numel()
            step += 1
        report = evaluate_regressor(model, held)
        report.update({"epoch": epoch + 1, "loss": loss_sum / n})
        if on_epoch is not None:
            on_epoch(report)
    model.eval().requires_grad_(False)
    oracle = oracle_from_regressor(model, device)
    report = evaluate_regressor(model, held)
    report.update({"train_images": n, "epochs": epochs, "width": width, "benchmark_seed": seed})
    return oracle, model, report


def oracle_from_regressor(model: FactorRegressor, device: torch.device | str | None = None) -> Classifier:
    """A :class:`Classifier` made of the regressor's backbone and class head (weights copied)."""
    oracle = build_classifier("smallcnn", NUM_CLASSES, (3, 32, 32), class_names=list(CLASS_NAMES), device=device, width=model.width)
    oracle.model.load_state_dict(model.backbone.state_dict())
    oracle.model.eval()
    oracle.name = "oracle_synthetic32"
    return oracle


def evaluate_regressor(model: FactorRegressor, data: ImageSet) -> dict[str, float]:
    """Held-out accuracy (categoricals, class) and mean absolute error in factor units (continuous; circular wrapped)."""
    pred = model.predict(data.images)
    out = {"acc.class": float((pred["class"] == data.labels).float().mean())}
    for f in FACTORS:
        truth = data.factors[f.name]
        mask = torch.ones_like(truth, dtype=torch.bool)
        if f.name in HIDDEN_WHEN:
            cond, hidden = HIDDEN_WHEN[f.name]
            mask = data.factors[cond] != hidden
        if f.is_categorical:
            out[f"acc.{f.name}"] = float((pred[f.name] == truth.long()).float().mean())
            continue
        diff = pred[f.name] - truth
        if f.circular:
            period = f.high - f.low
            if f.name == "rotation":
                order = torch.tensor([SYMMETRY[c] for c in CLASS_NAMES])[data.labels]
                mask = mask & (order > 0)
                period = period / order.clamp_min(1).float()
            diff = torch.remainder(diff + period / 2, period) - period / 2
        out[f"mae.{f.name}"] = float(diff[mask].abs().mean()) if bool(mask.any()) else float("nan")
    return out


def save_oracle(oracle: Classifier, regressor: FactorRegressor, report: dict[str, Any], *, oracle_path: str | Path = ORACLE,
                regressor_path: str | Path = FACTOR_REGRESSOR) -> None:
    save_classifier(oracle, oracle_path, extra={"trained_with": "robust.gan.metrics.train_oracle", "report": report})
    save_factor_regressor(regressor, regressor_path, extra={"trained_with": "robust.gan.metrics.train_oracle", "report": report})


# -- Frechet distance ----------------------------------------------------------------------------

def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` (float64 maths)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise InputError("features", "two [N, D] tensors with the same D", (tuple(a.shape), tuple(b.shape)))
    x, y = a.double().cpu().numpy(), b.double().cpu().numpy()
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr sqrt(Cx Cy) = sum of square roots of the eigenvalues of Cx^1/2 Cy Cx^1/2 (symmetric PSD).
    vals, vecs = np.linalg.eigh(cov_x)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = np.linalg.eigvalsh(root @ cov_y @ root)
    tr_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * tr_sqrt)


@torch.no_grad()
def classifier_features(classifier: Classifier, images01: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate features (``forward_features``) of a classifier whose network has one."""
    model = classifier.model
    if not hasattr(model, "forward_features"):
        raise InputError("classifier", "a network with forward_features (smallcnn, preact_resnet, timm)", type(model).__name__)
    out = []
    with classifier.eval_mode() as net:
        for i in range(0, images01.shape[0], batch_size):
            x = images01[i: i + batch_size].to(classifier.device)
            x = (x - net.mean) / net.std
            feats = model.forward_features(x)
            out.append((feats.flatten(1) if feats.dim() > 2 else feats).float().cpu())
    return torch.cat(out)


# -- sampling ------------------------------------------------------------------------------------

@torch.no_grad()
def generate(G: Generator, n: int, *, tokens: Mapping[str, torch.Tensor] | None = None, seed: int = 0, truncation_psi: float = 1.0,
             batch_size: int = 256, noise_mode: str = "const", truncation_center: str = "mean") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``n`` samples in ``[0, 1]`` (CPU) and the tokens they were conditioned on (uniform when not given).

    ``truncation_psi``/``truncation_center`` as in :class:`robust.gan.networks.MappingNetwork`.
    """
    gen = make_generator(derive_seed(seed, "gan-generate"))
    z = torch.randn((n, G.z_dim), generator=gen)
    if G.conditioning is not None:
        tokens = dict(tokens) if tokens is not None else G.conditioning.sample(n, gen)
        c = G.conditioning.encode(tokens)
    else:
        tokens, c = {}, None
    was = G.training
    G.eval()
    out = []
    for i in range(0, n, batch_size):
        ci = c[i: i + batch_size].to(G.device) if c is not None else None
        out.append(G.to_unit(G(z[i: i + batch_size].to(G.device), ci, truncation_psi=truncation_psi, noise_mode=noise_mode,
                               truncation_center=truncation_center)).cpu())
    G.train(was)
    return torch.cat(out), tokens


# -- the synthetic-benchmark metric --------------------------------------------------------------

@dataclass
class SyntheticReference:
    """Real renders and what the oracle and regressor make of them (computed once per evaluation setup)."""

    images: torch.Tensor
    classes: torch.Tensor
    factors: dict[str, torch.Tensor]
    features: torch.Tensor
    predictions: dict[str, torch.Tensor]


def synthetic_reference(n: int = 2000, seed: int = 7, oracle: Classifier | None = None, regressor: FactorRegressor | None = None) -> SyntheticReference:
    """Renders of the ``generator`` split (benchmark seed ``seed``) with oracle features and regressor predictions."""
    oracle = oracle or load_oracle()
    regressor = regressor or load_factor_regressor()
    bench = SyntheticBenchmark(size=32, seed=seed)
    classes, factors = bench.sample("generator", n)
    images = bench.render(classes, factors)
    return SyntheticReference(images, classes, factors, classifier_features(oracle, images), regressor.predict(images))


def _coverage(fake: torch.Tensor, real: torch.Tensor, f: Factor, bins: int = 10) -> dict[str, float]:
    """How fake predictions of one factor cover the real ones: bins hit, histogram distance, range overlap."""
    def hist(v: torch.Tensor) -> torch.Tensor:
        idx = ((v - f.low) / (f.high - f.low) * bins).floor().clamp(0, bins - 1).long()
        return torch.bincount(idx, minlength=bins).float() / max(1, v.numel())

    hf, hr = hist(fake), hist(real)
    populated = hr >= 0.5 / bins / 10  # at least 5% of a uniform bin's share
    covered = (hf >= 0.5 / bins / 10) & populated
    out = {"bins": float(covered.sum() / populated.sum().clamp_min(1)), "tv": float(0.5 * (hf - hr).abs().sum())}
    if not f.circular:
        lo_r, hi_r = torch.quantile(real, 0.01), torch.quantile(real, 0.99)
        lo_f, hi_f = torch.quantile(fake, 0.01), torch.quantile(fake, 0.99)
        overlap = (torch.minimum(hi_r, hi_f) - torch.maximum(lo_r, lo_f)).clamp_min(0)
        out["range"] = float(overlap / (hi_r - lo_r).clamp_min(1e-8))
    return out


def synthetic_metrics(G: Generator, *, n: int = 2000, seed: int = 0, truncation_psi: float = 1.0,
                      reference: SyntheticReference | None = None, oracle: Classifier | None = None,
                      regressor: FactorRegressor | None = None, truncation_center: str = "mean") -> dict[str, float]:
    """Oracle agreement with the conditioned class, token agreement, factor coverage and oracle-feature FD.

    Keys: ``class_agreement`` (fraction of samples the oracle assigns to the conditioned class),
    ``token_agreement.<group>`` (the regressor's verdict on the other conditioned groups),
    ``real.*`` (the same checks on real renders: the judges' own ceiling), ``coverage.<factor>.bins``
    / ``.tv`` / ``.range`` (predicted factor distributions on samples vs reals), ``fd_oracle``.
    """
    oracle = oracle or load_oracle()
    regressor = regressor or load_factor_regressor()
    reference = reference or synthetic_reference(n, oracle=oracle, regressor=regressor)
    if G.img_resolution != 32 or G.img_channels != 3:
        raise InputError("generator", "a 32x32 RGB generator of the synthetic benchmark", f"{G.img_resolution}x{G.img_resolution}x{G.img_channels}")
    images, tokens = generate(G, n, seed=seed, truncation_psi=truncation_psi, truncation_center=truncation_center)
    pred = regressor.predict(images)
    oracle_pred = oracle.predict(images)
    out: dict[str, float] = {}
    if "class" in tokens:
        class_ids = _token_to_factor(G, "class", tokens["class"], list(CLASS_NAMES))
        out["class_agreement"] = float((oracle_pred == class_ids).float().mean())
        per_class = [float((oracle_pred[class_ids == k] == k).float().mean()) for k in range(NUM_CLASSES) if bool((class_ids == k).any())]
        out["class_agreement_min"] = min(per_class) if per_class else float("nan")
    out["real.class_accuracy"] = float((oracle.predict(reference.images) == reference.classes).float().mean())
    for group in tokens:
        if group == "class":
            continue
        f = next((f for f in FACTORS if f.name == group and f.is_categorical), None)
        if f is None:
            continue
        wanted = _token_to_factor(G, group, tokens[group], list(f.categories))
        out[f"token_agreement.{group}"] = float((pred[group] == wanted).float().mean())
        out[f"real.{group}_accuracy"] = float((reference.predictions[group] == reference.factors[group].long()).float().mean())
    for f in FACTORS:
        if f.is_categorical:
            continue
        fake_v, real_v = pred[f.name], reference.predictions[f.name]
        if f.name in HIDDEN_WHEN:
            cond, hidden = HIDDEN_WHEN[f.name]
            fake_v, real_v = fake_v[pred[cond] != hidden], real_v[reference.predictions[cond] != hidden]
        if fake_v.numel() == 0:
            continue
        for k, v in _coverage(fake_v, real_v, f).items():
            out[f"coverage.{f.name}.{k}"] = v
    out["fd_oracle"] = frechet_distance(classifier_features(oracle, images), reference.features)
    return out


def _token_to_factor(G: Generator, group: str, values: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Map a generator's token indices of ``group`` onto the benchmark's category indices by name."""
    tokens = G.conditioning.tokens(group)
    lookup = torch.tensor([list(names).index(t) if t in names else -1 for t in tokens])
    return lookup[values.long()]


# -- snapshot metrics for any data ---------------------------------------------------------------

def train_feature_classifier(data: ImageSet, *, epochs: int = 5, width: int = 32, seed: int = 0,
                             device: torch.device | str = "cpu", batch_size: int = 128, lr: float = 2e-3) -> Classifier:
    """A SmallCNN trained on ``data`` (its features give the Frechet distance of generators of that data)."""
    clf = build_classifier("smallcnn", data.num_classes, (data.channels, *data.size), class_names=data.class_names, device=device, width=width)
    net = clf.network
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    gen = make_generator(derive_seed(seed, "feature-classifier"))
    total = epochs * math.ceil(len(data) / batch_size)
    step = 0
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            idx = order[i: i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(net(data.images[idx].to(clf.device)), data.labels[idx].to(clf.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    net.eval()
    return clf


def fd_metric(data: ImageSet, classifier: Classifier | None = None, *, n: int = 2000, seed: int = 0,
              device: torch.device | str = "cpu") -> Callable[[Generator], dict[str, float]]:
    """A snapshot metric: Frechet distance between samples and ``data`` in a classifier's feature space."""
    classifier = classifier or train_feature_classifier(data.take(min(len(data), 20_000), seed), seed=seed, device=device)
    reals = data.take(min(n, len(data)), seed)
    reference = classifier_features(classifier, reals.images)

    def metric(G: Generator) -> dict[str, float]:
        images, _ = generate(G, n, seed=seed)
        if images.shape[-1] != reals.images.shape[-1]:
            images = F.interpolate(images, size=reals.size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return {"fd": frechet_distance(classifier_features(classifier, images), reference)}

    return metric


def snapshot_metric(name: str, data: ImageSet, *, device: torch.device | str = "cpu", seed: int = 0, n: int = 2000) -> Callable[[Generator], dict[str, float]]:
    """``"synthetic"`` (oracle agreement, coverage, oracle FD) or ``"fd"`` (classifier trained on ``data``)."""
    if name == "synthetic":
        oracle, regressor = load_oracle(device=device), load_factor_regressor(device=device)
        reference = synthetic_reference(n, oracle=oracle, regressor=regressor)

        def metric(G: Generator) -> dict[str, float]:
            return synthetic_metrics(G, n=n, seed=seed, reference=reference, oracle=oracle, regressor=regressor)

        return metric
    if name == "fd":
        return fd_metric(data, n=n, seed=seed, device=device)
    raise InputError("metric", "synthetic or fd", name)
