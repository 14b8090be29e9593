"""Failure modes: SAGE's verified failures grouped and described in words.

Failures are split class by class with a greedy subgroup search (a shallow decision tree): at each
node the attribute value that is both common among the node's failures and over-represented
relative to the search's own random starting samples (its *lift*) carves out a subgroup. The
attributes are the prompt's tokens, the model's wrong prediction and, when a factor estimator is
given (the synthetic benchmark's factor regressor), binned ground-truth factors. Each leaf is a
mode, described by its conditions ("square with dots background, mistaken for star") plus its
dominant continuous factor ("object hue ~0.55") or latent direction, with counts and examples.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attacks.sage import CLASS_GROUP, Failure, SageResult
from robust.errors import InputError
from robust.results import metric_key

Phrase = str | Callable[[str], str]
_MIN_LIFT = 1.5
_MIN_EXCESS_TV = 0.1  # a factor names a mode only when its distribution there differs this much beyond chance
# Fewer starting samples of a class than these: compare with all starting samples (token and prediction
# shares need few samples; factor histograms of ten bins need many).
_BASELINE_MIN = 20
_FACTOR_BASELINE_MIN = 200


@dataclass(frozen=True)
class FactorInfo:
    """A continuous factor a :class:`FactorEstimates` covers: its range, whether it wraps, and its name in words."""

    name: str
    low: float
    high: float
    circular: bool = False
    words: str = ""
    bins: int = 10

    @property
    def label(self) -> str:
        return self.words or self.name

    def bin(self, values: torch.Tensor) -> torch.Tensor:
        t = (values.float() - self.low) / (self.high - self.low)
        return (t * self.bins).floor().long().clamp(0, self.bins - 1)

    def bin_text(self, b: int) -> str:
        width = (self.high - self.low) / self.bins
        return f"{self.label} {self.low + b * width:.2f}-{self.low + (b + 1) * width:.2f}"

    def centre(self, values: torch.Tensor) -> float:
        """Circular mean for circular factors, median otherwise."""
        if not values.numel():
            return float("nan")
        if self.circular:
            angle = (values.double() - self.low) / (self.high - self.low) * 2 * math.pi
            mean = math.atan2(float(angle.sin().mean()), float(angle.cos().mean())) % (2 * math.pi)
            return self.low + mean / (2 * math.pi) * (self.high - self.low)
        return float(values.double().median())


@dataclass
class FactorEstimates:
    """Estimated continuous factors of the failures and of the search's starting samples (same order as the result's)."""

    info: list[FactorInfo]
    failures: dict[str, torch.Tensor]  # name -> [N failures]
    baseline: dict[str, torch.Tensor]  # name -> [M <= len(result.baseline_tokens)] (the first M starts)


@dataclass
class FailureMode:
    """A group of failures with a description in words; ``indices`` point into ``SageResult.failures``."""

    name: str  # a metric key ("square_texture_dots_pred_star")
    description: str
    conditions: list[dict[str, Any]]  # [{"kind": "class"|"token"|"prediction"|"factor", "key", "value", "text"}]
    indices: list[int]
    share: float  # of all failures
    lift: float  # how much more often the conditions hold among failures than among random starts
    prediction: str  # most common wrong prediction
    prediction_share: float
    dominant: str = ""  # "object hue ~0.55" or "direction sefa_3 +1.2 sd"
    dominant_key: str | None = None  # the factor or direction named by ``dominant``
    dominant_value: float | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # the prompt tokens the mode fixes
    region_radius: float | None = None  # median over its failures where measured

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def rank(self) -> float:
        """Size weighted by how distinctive the conditions are: ``count * log2(1 + lift)`` (a leftover group has lift 1)."""
        return self.count * math.log2(1.0 + max(self.lift, 0.0))

    def named_factors(self) -> list[str]:
        """Ground-truth factors and token groups the description names."""
        names = [c["key"] for c in self.conditions if c["kind"] in ("token", "factor")]
        if self.dominant_key and self.dominant_key not in names:
            names.append(self.dominant_key)
        return names

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "count": self.count, "share": self.share, "lift": self.lift,
                "prediction": self.prediction, "prediction_share": self.prediction_share, "dominant": self.dominant,
                "dominant_key": self.dominant_key, "dominant_value": self.dominant_value, "tokens": dict(self.tokens),
                "conditions": [dict(c) for c in self.conditions], "region_radius": self.region_radius,
                "named_factors": self.named_factors(), "indices": list(self.indices)}


# -- attributes --------------------------------------------------------------------------------------

@dataclass
class _Attribute:
    kind: str  # token | prediction | factor
    key: str
    values: torch.Tensor  # [N failures]
    base: torch.Tensor | None  # [M] values among starting samples (None: uniform prior)
    cardinality: int
    text: Callable[[int], str]


def _phrase(phrases: Mapping[str, Phrase], group: str, token: str) -> str:
    p = phrases.get(group)
    if p is None:
        return f"{group} {token}"
    return p(token) if callable(p) else p.format(token)


def failure_modes(
    result: SageResult,
    *,
    factors: FactorEstimates | None = None,
    directions: Any = None,
    phrases: Mapping[str, Phrase] | None = None,
    min_size: int | None = None,
    max_depth: int = 3,
) -> list[FailureMode]:
    """Group ``result.failures`` into described modes, by :attr:`FailureMode.rank` (every failure in exactly one mode).

    ``factors``: estimated continuous factors (binned as split attributes; the dominant one names
    each mode). ``directions``: latent directions (an object with ``vectors [K, w_dim]`` and
    ``names``, or a tensor) used to name a mode's dominant direction when no factor estimates are
    given. ``phrases``: how a token reads in words per group (``{"texture": "{} background"}``).
    ``min_size``: smallest subgroup carved out (default: 3 or 2% of the failures).
    """
    failures = result.failures
    if not failures:
        return []
    phrases = dict(phrases or {})
    n = len(failures)
    min_size = max(2, int(min_size if min_size is not None else max(3, round(0.02 * n))))
    names = [g for g, _ in result.groups]
    class_col = names.index(CLASS_GROUP)
    class_tokens = result.groups[class_col][1]
    labels = torch.tensor([f.label for f in failures])
    base_labels = result.baseline_tokens[:, class_col] if result.baseline_tokens.numel() else torch.zeros(0, dtype=torch.long)

    attributes: list[_Attribute] = []
    for col, (group, tokens) in enumerate(result.groups):
        if group == CLASS_GROUP:
            continue
        values = torch.tensor([f.token_ids[col] for f in failures])
        attributes.append(_Attribute("token", group, values, result.baseline_tokens[:, col], len(tokens),
                                     lambda v, g=group, t=tokens: _phrase(phrases, g, t[v])))
    predictions = torch.tensor([f.prediction for f in failures])
    model_names = result.model_classes
    attributes.append(_Attribute("prediction", "prediction", predictions, None, max(2, len(model_names)),
                                 lambda v: f"mistaken for {model_names[v] if v < len(model_names) else v}"))
    if factors is not None:
        m = min((int(v.shape[0]) for v in factors.baseline.values()), default=0)
        for info in factors.info:
            if info.name not in factors.failures:
                continue
            base = factors.baseline.get(info.name)
            attributes.append(_Attribute("factor", info.name, info.bin(factors.failures[info.name]),
                                         info.bin(base[:m]) if base is not None and m else None, info.bins,
                                         lambda v, i=info: i.bin_text(v)))

    modes: list[FailureMode] = []
    for k in sorted(set(labels.tolist()), key=lambda c: (-int((labels == c).sum()), c)):
        rows = (labels == k).nonzero().squeeze(1)
        base_k = (base_labels == k).nonzero().squeeze(1)
        base = base_k if base_k.numel() >= _BASELINE_MIN else torch.arange(base_labels.numel())
        cond = [{"kind": "class", "key": CLASS_GROUP, "value": class_tokens[k], "text": class_tokens[k]}]
        _split(rows, base, cond, attributes, set(), max_depth, min_size, modes, n)
    _describe(modes, failures, result, factors, directions, class_tokens)
    modes.sort(key=lambda m: (-m.rank, m.name))
    return modes


def _base_share(attr: _Attribute, base: torch.Tensor, value: int) -> float:
    """Share of ``value`` among the starting samples ``base`` (add-one smoothed), or the uniform prior."""
    if attr.base is None:
        return 1.0 / max(1, attr.cardinality - 1) if attr.kind == "prediction" else 1.0 / attr.cardinality
    covered = base[base < attr.base.shape[0]]
    count = int((attr.base[covered] == value).sum()) if covered.numel() else 0
    return (count + 1.0) / (covered.numel() + attr.cardinality)


def _split(rows: torch.Tensor, base: torch.Tensor, cond: list[dict[str, Any]], attributes: list[_Attribute], used: set[str],
           depth: int, min_size: int, out: list[FailureMode], total: int) -> None:
    best = None
    if depth > 0 and rows.numel() >= min_size:
        for attr in attributes:
            if attr.key in used:
                continue
            values = attr.values[rows]
            counts = torch.bincount(values, minlength=attr.cardinality)
            for v in (counts >= min_size).nonzero().squeeze(1).tolist():
                share = float(counts[v]) / rows.numel()
                lift = share / _base_share(attr, base, v)
                if lift < _MIN_LIFT:
                    continue
                score = float(counts[v]) * math.log(lift)
                if best is None or score > best[0] + 1e-9:
                    best = (score, attr, v, lift)
    if best is None:
        out.append(_mode(rows, cond, base, attributes, total))
        return
    _, attr, v, lift = best
    inside = attr.values[rows] == v
    text = attr.text(v)
    sub_base = base
    if attr.base is not None:
        covered = base[base < attr.base.shape[0]]
        matching = covered[attr.base[covered] == v]
        sub_base = matching if matching.numel() >= _BASELINE_MIN else base
    _split(rows[inside], sub_base, cond + [{"kind": attr.kind, "key": attr.key, "value": v, "text": text}], attributes,
           used | {attr.key}, depth - 1, min_size, out, total)
    rest = rows[~inside]
    if rest.numel():
        _split(rest, base, cond, attributes, used, depth, min_size, out, total)


def _mode(rows: torch.Tensor, cond: list[dict[str, Any]], base: torch.Tensor, attributes: list[_Attribute], total: int) -> FailureMode:
    lift = 1.0
    by_key = {a.key: a for a in attributes}
    for c in cond[1:]:
        attr = by_key[c["key"]]
        share = float((attr.values[rows] == c["value"]).float().mean()) if rows.numel() else 0.0
        lift *= share / _base_share(attr, base, c["value"])
    return FailureMode(name="", description="", conditions=[dict(c) for c in cond], indices=rows.tolist(),
                       share=rows.numel() / max(1, total), lift=lift, prediction="", prediction_share=0.0)


# -- descriptions ------------------------------------------------------------------------------------

def _excess_tv(a: torch.Tensor, b: torch.Tensor, bins: int) -> float:
    """Total-variation distance of two binned samples minus what sampling noise alone gives (approximately).

    Small groups differ from the baseline by chance; under the null each bin's difference is about
    normal with variance ``p (1 - p) (1/n + 1/m)``, whose mean absolute value is ``sqrt(2/pi)`` sd.
    """
    n, m = max(1, a.numel()), max(1, b.numel())
    ha = torch.bincount(a, minlength=bins).double() / n
    hb = torch.bincount(b, minlength=bins).double() / m
    pooled = (ha * n + hb * m) / (n + m)
    null = 0.5 * float((2.0 / math.pi * pooled * (1 - pooled) * (1.0 / n + 1.0 / m)).sqrt().sum())
    return 0.5 * float((ha - hb).abs().sum()) - null


def _direction_vectors(directions: Any) -> tuple[torch.Tensor, list[str]] | None:
    if directions is None:
        return None
    vectors = getattr(directions, "vectors", directions)
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2:
        raise InputError("directions", "a Directions object or a [K, w_dim] tensor", type(directions).__name__)
    names = list(getattr(directions, "names", None) or [f"direction_{i}" for i in range(vectors.shape[0])])
    return vectors.float().cpu(), names


def _describe(modes: list[FailureMode], failures: Sequence[Failure], result: SageResult, factors: FactorEstimates | None,
              directions: Any, class_tokens: Sequence[str]) -> None:
    dirs = _direction_vectors(directions)
    names = [g for g, _ in result.groups]
    class_col = names.index(CLASS_GROUP)
    taken: set[str] = set()
    for mode in modes:
        rows = mode.indices
        preds = torch.tensor([failures[i].prediction for i in rows])
        top = int(torch.bincount(preds).argmax())
        mode.prediction = result.model_classes[top] if top < len(result.model_classes) else str(top)
        mode.prediction_share = float((preds == top).float().mean())
        mode.tokens = {c["key"]: str(c["value"]) if c["kind"] == "class" else result.groups[names.index(c["key"])][1][c["value"]]
                       for c in mode.conditions if c["kind"] in ("class", "token")}
        named = {c["key"] for c in mode.conditions}
        if factors is not None:
            best = None
            k = class_tokens.index(mode.tokens[CLASS_GROUP])
            m = min((int(v.shape[0]) for v in factors.baseline.values()), default=0)
            base_rows = (result.baseline_tokens[:m, class_col] == k).nonzero().squeeze(1) if m else torch.zeros(0, dtype=torch.long)
            if base_rows.numel() < _FACTOR_BASELINE_MIN:
                base_rows = torch.arange(m)
            for info in factors.info:
                if info.name in named or info.name not in factors.failures or info.name not in factors.baseline:
                    continue
                vals = factors.failures[info.name][rows]
                base_bins = info.bin(factors.baseline[info.name][base_rows])
                tv = _excess_tv(info.bin(vals), base_bins, info.bins) if base_rows.numel() else 0.0
                if best is None or tv > best[0]:
                    best = (tv, info, vals)
            if best is not None and best[0] >= _MIN_EXCESS_TV:
                _, info, vals = best
                mode.dominant_key, mode.dominant_value = info.name, info.centre(vals)
                mode.dominant = f"{info.label} ~{mode.dominant_value:.2f}"
        elif dirs is not None:
            vectors, dnames = dirs
            moves = torch.stack([failures[i].w - failures[i].start_w for i in rows])
            starts = torch.stack([failures[i].start_w for i in rows])
            proj = moves @ vectors.T
            spread = (starts @ vectors.T).std(0).clamp_min(1e-6) if len(rows) > 1 else torch.ones(vectors.shape[0])
            effect = proj.mean(0) / spread
            j = int(effect.abs().argmax())
            mode.dominant_key, mode.dominant_value = dnames[j], float(effect[j])
            mode.dominant = f"direction {dnames[j]} {effect[j]:+.1f} sd"
        parts = [c["text"] for c in mode.conditions if c["kind"] == "class"]
        tokens = [c["text"] for c in mode.conditions if c["kind"] == "token"]
        others = [c["text"] for c in mode.conditions if c["kind"] == "factor"]
        text = parts[0] + (" with " + ", ".join(tokens) if tokens else "")
        if others:
            text += ", " + ", ".join(others)
        preds_named = [c["text"] for c in mode.conditions if c["kind"] == "prediction"]
        text += ", " + (preds_named[0] if preds_named else f"mostly mistaken for {mode.prediction} ({mode.prediction_share:.0%})")
        if mode.dominant:
            text += f"; dominant: {mode.dominant}"
        mode.description = text
        base_name = metric_key("_".join([mode.tokens[CLASS_GROUP]] + [_key_part(c, result) for c in mode.conditions[1:]]))
        name, i = base_name, 2
        while name in taken:
            name, i = f"{base_name}_{i}", i + 1
        taken.add(name)
        mode.name = name
        radii = [failures[i].region_radius for i in rows if failures[i].region_radius is not None]
        if radii:
            mode.region_radius = float(torch.tensor(radii).median())


def _key_part(c: dict[str, Any], result: SageResult) -> str:
    if c["kind"] == "token":
        groups = dict(result.groups)
        return f"{c['key']}_{groups[c['key']][c['value']]}"
    if c["kind"] == "prediction":
        names = result.model_classes
        return f"pred_{names[c['value']] if c['value'] < len(names) else c['value']}"
    return f"{c['key']}_bin{c['value']}"


def modes_table(modes: Sequence[FailureMode], limit: int = 20) -> dict[str, Any]:
    """A report table (``{title, columns, rows}``) of the first modes."""
    rows = [[m.description, m.count, m.share, m.prediction, m.dominant or "-", m.lift,
             m.region_radius if m.region_radius is not None else "n/a"] for m in list(modes)[:limit]]
    columns = ["mode", "failures", "share", "most often predicted", "dominant factor/direction", "lift vs random starts", "region radius"]
    return {"title": "failure modes (distinctive and large first)", "columns": columns, "rows": rows}
