"""Failure modes as regression tests: a JSON case file (prompts + latents) and a pytest file that replays it.

:func:`export_regression` writes ``<name>.json`` (the mode's prompts and latent codes, the
generator's and model's fingerprints, how the images were rendered) and ``test_<name>.py`` next to
it. The test re-renders the images with the generator and asserts the model classifies every one
as its prompt's class: it fails for the model the failures were found on and passes once a fixed
model gets them right. The model under test is the exported path unless ``ROBUST_SAGE_MODEL``
names another one; the generator is checked against its fingerprint so a different generator
cannot silently test different images.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attacks.sage import CLASS_GROUP, SageResult, class_indices
from attacks.sage_modes import FailureMode
from robust.errors import FileFormatError, InputError
from robust.gan.conditioning import Conditioning
from robust.gan.encoder import generator_fingerprint
from robust.gan.latent import render_prompts
from robust.io import read_json, write_json, write_text
from robust.models import Classifier, load_classifier
from robust.results import metric_key

CASE_FORMAT = "robust-sage-case"
MODEL_ENV = "ROBUST_SAGE_MODEL"


class RegressionFailure(AssertionError):
    """A replayed SAGE case still fails: the message lists every image the model gets wrong."""


@dataclass
class RegressionCase:
    """Prompts and latents of a failure mode, replayable on any model of the same classes."""

    name: str
    description: str
    space: str
    truncation_psi: float
    noise_mode: str
    groups: list[tuple[str, list[str]]]
    prompts: list[dict[str, str]]  # group -> token name, one per image
    z: torch.Tensor  # [N, z_dim]
    delta: torch.Tensor | None  # [N, L, w_dim]
    generator_source: str | None
    generator_fingerprint: str
    model_source: str | None
    path: Path | None = None

    @property
    def labels(self) -> list[str]:
        return [p[CLASS_GROUP] for p in self.prompts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CASE_FORMAT, "version": 1, "name": self.name, "description": self.description, "space": self.space,
            "truncation_psi": self.truncation_psi, "noise_mode": self.noise_mode,
            "groups": [[g, list(t)] for g, t in self.groups], "prompts": [dict(p) for p in self.prompts],
            "z": self.z.tolist(), "delta": self.delta.tolist() if self.delta is not None else None,
            "generator": {"source": self.generator_source, "fingerprint": self.generator_fingerprint},
            "model": {"source": self.model_source},
        }

    @classmethod
    def load(cls, path: str | Path) -> RegressionCase:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != CASE_FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise FileFormatError(path, f"a {CASE_FORMAT!r} case file", got)
        try:
            delta = torch.tensor(data["delta"], dtype=torch.float32) if data["delta"] is not None else None
            return cls(name=data["name"], description=data["description"], space=data["space"],
                       truncation_psi=float(data["truncation_psi"]), noise_mode=data["noise_mode"],
                       groups=[(g, list(t)) for g, t in data["groups"]], prompts=list(data["prompts"]),
                       z=torch.tensor(data["z"], dtype=torch.float32), delta=delta, generator_source=data["generator"]["source"],
                       generator_fingerprint=data["generator"]["fingerprint"], model_source=data["model"]["source"], path=Path(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(path, "a complete SAGE case (prompts, latents, generator)", f"unusable ({exc})") from None

    def _generator(self, generator: Any) -> Any:
        if generator is None:
            from robust import gan

            if self.generator_source is None:
                raise InputError("generator", "a generator (the case names none)", None)
            source = self.generator_source
            if source != "demo" and self.path is not None and not Path(source).is_absolute() and (self.path.parent / source).exists():
                source = str(self.path.parent / source)
            generator = gan.load_demo() if source == "demo" else gan.load(source)
        found = generator_fingerprint(generator)
        if found != self.generator_fingerprint:
            raise InputError("generator", f"the generator the case was exported with (fingerprint {self.generator_fingerprint})",
                             f"fingerprint {found}")
        groups = Conditioning.of(generator, CLASS_GROUP).groups
        if [(g, list(t)) for g, t in groups] != [(g, list(t)) for g, t in self.groups]:
            raise InputError("generator conditioning", "the case's token groups", groups)
        return generator

    @torch.no_grad()
    def render(self, generator: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images in [0, 1], class token indices)`` re-rendered from the stored prompts and latents."""
        G = self._generator(generator)
        names = [g for g, _ in self.groups]
        rows = [[self.groups[i][1].index(p[g]) for i, g in enumerate(names)] for p in self.prompts]
        device = G.mapping.w_avg.device
        tokens = torch.tensor(rows, dtype=torch.long, device=device)
        delta = self.delta.to(device) if self.delta is not None else None
        was = G.training
        G.eval()
        images, _, _ = render_prompts(G, tokens, self.z.to(device), delta, truncation_psi=self.truncation_psi, noise_mode=self.noise_mode)
        G.train(was)
        return images, tokens[:, names.index(CLASS_GROUP)]

    def check(self, model: Any = None, generator: Any = None) -> dict[str, Any]:
        """Re-render and classify: ``{"n", "wrong": [(i, prompt, predicted)], "accuracy"}``."""
        source = model if model is not None else self.model_source
        if source is None:
            raise InputError("model", f"a model (or set {MODEL_ENV})", None)
        clf = source if isinstance(source, Classifier) else load_classifier(source)
        images, labels = self.render(generator)
        class_tokens = self.groups[[g for g, _ in self.groups].index(CLASS_GROUP)][1]
        index = class_indices(clf, class_tokens)
        predicted = clf.predict(images).cpu()
        wanted = index[labels.cpu()]
        wrong = [(i, self.prompts[i], clf.class_names[int(predicted[i])])
                 for i in range(len(self.prompts)) if int(predicted[i]) != int(wanted[i])]
        return {"n": len(self.prompts), "wrong": wrong, "accuracy": 1.0 - len(wrong) / max(1, len(self.prompts))}

    def assert_fixed(self, model: Any = None, generator: Any = None) -> None:
        """Raise :class:`RegressionFailure` unless the model classifies every re-rendered image correctly."""
        report = self.check(model, generator)
        if report["wrong"]:
            lines = [f"  image {i}: {', '.join(f'{k}={v}' for k, v in prompt.items())} -> predicted {pred}"
                     for i, prompt, pred in report["wrong"][:20]]
            more = f"\n  ... and {len(report['wrong']) - 20} more" if len(report["wrong"]) > 20 else ""
            raise RegressionFailure(f"SAGE failure mode {self.name!r} ({self.description}): {len(report['wrong'])} of {report['n']} "
                                    "re-rendered images still misclassified\n" + "\n".join(lines) + more)


_TEST_TEMPLATE = '''"""SAGE regression case {name}: {description} ({n} images).

Exported by robust search; it re-renders the failure mode's prompts and latents and asserts the
model classifies all of them as their prompt's class. Set {env} to test another model.
"""
import os
from pathlib import Path

from attacks.sage_regression import RegressionCase

CASE = Path(__file__).with_name({case_file!r})


def test_{func}():
    case = RegressionCase.load(CASE)
    case.assert_fixed(os.environ.get({env!r}) or case.model_source)
'''


def export_regression(
    result: SageResult,
    mode: FailureMode | Sequence[int],
    folder: str | Path,
    *,
    generator: Any,
    generator_source: str | None,
    model_source: str | None = None,
    name: str | None = None,
    limit: int = 64,
) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.json`` and ``<folder>/test_<name>.py`` for a mode (or failure indices); returns both paths.

    ``generator`` is the generator the failures came from (its fingerprint goes in the case);
    ``generator_source`` how the test finds it again (``"demo"`` or a path); ``model_source`` the
    model the test checks by default. At most ``limit`` failures (the mode's first) are kept.
    """
    indices = list(mode.indices) if isinstance(mode, FailureMode) else [int(i) for i in mode]
    if not indices:
        raise InputError("mode", "a failure mode with at least one failure", "none")
    failures = [result.failures[i] for i in indices[: max(1, int(limit))]]
    label = name or (mode.name if isinstance(mode, FailureMode) else "sage_case")
    key = re.sub(r"\W", "_", metric_key(label)).lower()
    description = mode.description if isinstance(mode, FailureMode) else f"{len(failures)} SAGE failures"
    delta = torch.stack([f.delta for f in failures]) if failures[0].delta is not None else None
    case = RegressionCase(name=key, description=description, space=result.config.space, truncation_psi=result.config.truncation_psi,
                          noise_mode=result.config.noise_mode, groups=[(g, list(t)) for g, t in result.groups],
                          prompts=[dict(f.tokens) for f in failures], z=torch.stack([f.z for f in failures]), delta=delta,
                          generator_source=generator_source, generator_fingerprint=generator_fingerprint(generator),
                          model_source=model_source)
    folder = Path(folder)
    case_path = write_json(folder / f"{key}.json", case.to_dict())
    test_path = write_text(folder / f"test_{key}.py", _TEST_TEMPLATE.format(
        name=key, description=description.replace('"', "'"), n=len(failures), env=MODEL_ENV, case_file=case_path.name, func=key))
    return case_path, test_path
