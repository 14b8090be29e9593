"""Training and hardening classifiers: ``fit`` (plain cross-entropy) and ``harden`` (recipes, DDP, resume).

``harden(model, data, "natra:gradient+classic", eval_sets=..., out="runs/x")`` trains with recipes
mixed per batch (:mod:`robust.train.recipes`), evaluates every epoch (:mod:`robust.train.evaluation`),
and writes best/last checkpoints and a resumable state (:mod:`robust.train.state`).
"""
from __future__ import annotations

from robust.train.evaluation import evaluate
from robust.train.loop import EMA, OPTIMIZER_PRESETS, TrainConfig, TrainResult, cosine_lr, fit, harden, lr_factor, make_optimizer
from robust.train.recipes import RECIPES, Batch, Recipe, RecipeContext, RecipeMix, get_recipe, parse_recipes

__all__ = [
    "EMA", "OPTIMIZER_PRESETS", "RECIPES", "Batch", "Recipe", "RecipeContext", "RecipeMix", "TrainConfig",
    "TrainResult", "cosine_lr", "evaluate", "fit", "get_recipe", "harden", "lr_factor", "make_optimizer", "parse_recipes",
]
