"""Oracle ensembles: small classifiers of a generator's token groups, trained on real images only.

SAGE's verification asks several judges that never saw a generated image whether a candidate shows
its prompt: members for the ``class`` group (different architectures and seeds) and one per
attribute group (``texture``, ``fill``, ...). A user trains them on their own real images with
:func:`train_ensemble`; the shipped one (:data:`ENSEMBLE`) is trained on renders of the synthetic
benchmark's ``generator`` split, none used by any generator's training, guidance or snapshot choice.
Each member is an ordinary classifier checkpoint (safetensors + JSON with command, seed, hardware, time).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import ASSETS
from robust.imageset import ImageSet
from robust.io import read_json
from robust.models import Classifier, build_classifier, load_classifier, save_classifier

ENSEMBLE = ASSETS / "sage_oracles"
#: Group a member of the ensemble judges (in its checkpoint's ``extra``).
GROUP_KEY = "oracle_group"


@dataclass(frozen=True)
class MemberSpec:
    """How one member is trained: the group it classifies, its architecture and the seed of its data and weights."""

    name: str
    group: str
    arch: str = "smallcnn"
    arch_kwargs: tuple[tuple[str, Any], ...] = (("width", 16),)
    seed: int = 0


#: The shipped ensemble: three class members of two architectures, one member per attribute group.
#: ``class_d`` is held out of the checks: it only estimates the false-failure rate.
SHIPPED = (
    MemberSpec("class_a", "class", "smallcnn", (("width", 16),), 2),
    MemberSpec("class_b", "class", "preact_resnet", (("depth", 8), ("width", 16)), 3),
    MemberSpec("class_c", "class", "smallcnn", (("width", 16),), 4),
    MemberSpec("class_d", "class", "preact_resnet", (("depth", 8), ("width", 16)), 5),
    MemberSpec("texture", "texture", "smallcnn", (("width", 8),), 6),
    MemberSpec("fill", "fill", "smallcnn", (("width", 8),), 7),
    MemberSpec("mark", "mark", "smallcnn", (("width", 8),), 8),
)
HELD_OUT = ("class_d",)


def group_labels(data: ImageSet, group: str) -> ImageSet:
    """``data`` relabelled by a token group: ``class`` itself, or a categorical factor the data carries."""
    if group == "class":
        return data
    from robust.gan.training import condition_tokens

    conditioning, tokens = condition_tokens(data, [group])
    return ImageSet(data.images, tokens[group], conditioning.tokens(group), name=f"{data.name}:{group}")


def train_member(data: ImageSet, spec: MemberSpec, *, epochs: int = 10, device: torch.device | str = "cpu",
                 command: str | None = None) -> Classifier:
    """One member trained on real images (``data`` relabelled by ``spec.group``) with :func:`robust.train.fit`.

    The checkpoint's ``extra`` records the group, architecture, seed, data, command, hardware and time.
    """
    from robust.provenance import command_line, hardware
    from robust.train import fit

    labelled = group_labels(data, spec.group)
    clf = build_classifier(spec.arch, labelled.num_classes, (labelled.channels, *labelled.size), class_names=labelled.class_names,
                           device=device, seed=spec.seed, **dict(spec.arch_kwargs))
    clf.name = spec.name
    start = time.time()
    history = fit(clf, labelled, epochs=epochs, seed=spec.seed, progress=False)
    clf.extra = {GROUP_KEY: spec.group, "member": spec.name, "seed": spec.seed, "data": data.name, "images": len(data),
                 "epochs": epochs, "final_train_acc": history[-1]["acc"] if history else None,
                 "command": command or command_line(), "hardware": hardware(torch.device(device)),
                 "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(start)), "seconds": round(time.time() - start, 1),
                 "torch": torch.__version__, "trained_with": "robust.gan.oracles.train_member"}
    return clf


def synthetic_member_data(spec: MemberSpec, n: int = 10_000, size: int = 32) -> ImageSet:
    """Renders of the synthetic benchmark's ``generator`` split at benchmark seed ``100 + spec.seed``
    (no generator, classifier or oracle of the project is trained on these renders)."""
    from robust.synthetic import SyntheticBenchmark

    return SyntheticBenchmark(size=size, seed=100 + spec.seed).split("generator", n)


def train_ensemble(folder: str | Path = ENSEMBLE, specs: Sequence[MemberSpec] = SHIPPED, *, data: ImageSet | None = None,
                   n: int = 10_000, epochs: int = 10, device: torch.device | str = "cpu", evaluate: ImageSet | None = None,
                   log: Callable[[str], None] | None = None) -> list[Path]:
    """Train and save every member of ``specs`` into ``folder`` (``<name>.safetensors`` + ``.json``).

    ``data``: the user's real images (group labels as :func:`group_labels` reads them); None uses
    :func:`synthetic_member_data` per member. ``evaluate``: held-out real images whose accuracy
    per member goes into its checkpoint.
    """
    paths = []
    for spec in specs:
        member_data = data if data is not None else synthetic_member_data(spec, n)
        clf = train_member(member_data, spec, epochs=epochs, device=device)
        if evaluate is not None:
            held = group_labels(evaluate, spec.group)
            clf.extra["heldout_accuracy"] = clf.accuracy(held.images.to(clf.device), held.labels.to(clf.device))
        weights, _ = save_classifier(clf, Path(folder) / spec.name, extra=clf.extra)
        paths.append(weights)
        if log is not None:
            log(f"{spec.name} ({spec.group}, {spec.arch}): {clf.extra}")
    return paths


@dataclass
class OracleEnsemble:
    """The loaded members: judges of the class (``classes``), the held-out class judges (``held_out``,
    used only to estimate the false-failure rate) and one judge per attribute group (``tokens``)."""

    classes: list[Classifier]
    held_out: list[Classifier] = field(default_factory=list)
    tokens: dict[str, Classifier] = field(default_factory=dict)
    source: str = ""

    def names(self) -> list[str]:
        return [m.name for m in self.classes]

    def token_verifier(self, groups: Sequence[tuple[str, Sequence[str]]]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]] | None:
        """``images01 -> {group: token index of the generator}`` from the attribute members (None without any)."""
        lookup = {g: _token_lookup(self.tokens[g], tokens) for g, tokens in groups if g in self.tokens}
        if not lookup:
            return None

        def verify(images01: torch.Tensor) -> dict[str, torch.Tensor]:
            return {g: lookup[g].to(images01.device)[self.tokens[g].predict(images01).to(images01.device)] for g in lookup}

        return verify

    def token_scorer(self, groups: Sequence[tuple[str, Sequence[str]]]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]] | None:
        """``images01 -> {group: log-probabilities [N, generator tokens]}``, differentiable (None without attribute members)."""
        columns = {g: _token_columns(self.tokens[g], tokens) for g, tokens in groups if g in self.tokens}
        if not columns:
            return None

        def score(images01: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for g, cols in columns.items():
                member = self.tokens[g]
                with member.eval_mode() as net:
                    log_probs = net(images01.to(member.device)).float().log_softmax(1)
                out[g] = log_probs[:, cols.to(log_probs.device)].to(images01.device)
            return out

        return score

    def describe(self) -> dict[str, Any]:
        def one(m: Classifier) -> dict[str, Any]:
            extra = getattr(m, "extra", {}) or {}
            return {"name": m.name, "arch": m.arch, "seed": extra.get("seed"), "heldout_accuracy": extra.get("heldout_accuracy")}

        return {"source": self.source, "class": [one(m) for m in self.classes], "held_out": [one(m) for m in self.held_out],
                "tokens": {g: one(m) for g, m in self.tokens.items()}}


def _token_lookup(member: Classifier, tokens: Sequence[str]) -> torch.Tensor:
    """Member output index -> generator token index (-1: an output the generator has no token for)."""
    return torch.tensor([list(tokens).index(c) if c in tokens else -1 for c in member.class_names])


def _token_columns(member: Classifier, tokens: Sequence[str]) -> torch.Tensor:
    """Generator token index -> member output index."""
    missing = [t for t in tokens if t not in member.class_names]
    if missing:
        raise InputError(f"oracle {member.name}", "outputs named like the generator's tokens", f"no output for {missing[:5]}")
    return torch.tensor([list(member.class_names).index(t) for t in tokens])


def load_ensemble(folder: str | Path = ENSEMBLE, device: torch.device | str | None = None,
                  held_out: Sequence[str] = HELD_OUT) -> OracleEnsemble:
    """Every member checkpoint in ``folder``, sorted by name, split by the group recorded in its ``extra``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileFormatError(folder, "a folder of oracle member checkpoints (train_ensemble)", "no .json files")
    ensemble = OracleEnsemble([], source=str(folder))
    for path in files:
        member = load_classifier(path, device=device)
        member.extra = dict(read_json(path).get("extra", {}))
        group = member.extra.get(GROUP_KEY, "class")
        if group != "class":
            ensemble.tokens[group] = member
        elif member.name in held_out:
            ensemble.held_out.append(member)
        else:
            ensemble.classes.append(member)
    if not ensemble.classes:
        raise FileFormatError(folder, "at least one class member", [p.stem for p in files])
    return ensemble


def ensemble_available(folder: str | Path = ENSEMBLE) -> bool:
    return Path(folder).is_dir() and any(Path(folder).glob("*.safetensors"))


def member_probs(members: Sequence[Classifier], images01: torch.Tensor, index: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Every member's probabilities ``[M, N, K]`` (no gradients); ``index[name]`` picks and orders each member's outputs."""
    out = []
    for m in members:
        p = m.probabilities(images01).to(images01.device)
        out.append(p[:, index[m.name].to(p.device)] if index is not None else p)
    return torch.stack(out)
