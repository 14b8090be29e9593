"""Generative models of natural variation: our own StyleGAN2-ADA (networks, ADA training, safe import, demo generator)
and a structure/appearance (swap) model; :func:`load_model` reads a file of either kind."""
from __future__ import annotations

from robust.gan.augment_ada import AdaController, AugmentConfig, AugmentPipe
from robust.gan.checkpoint import load, load_demo, load_generator, save_generator
from robust.gan.conditioning import Conditioning
from robust.gan.networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork
from robust.gan.presets import PRESETS, GANConfig, preset
from robust.gan.training import Trainer, TrainingData, prepare_data
from robust.gan.latent import LatentPrior, latent_stats, prompt_prior, sample_ws, synthesize
from robust.gan.inversion import InversionConfig, InversionResult, invert_batch
from robust.gan.encoder import Encoder, EncoderTraining, load_encoder, save_encoder, train_encoder
from robust.gan.directions import DIRECTION_FINDERS, Directions, calibrate_ranges, find_directions, load_directions, score_directions, select_directions
from robust.gan.codes_cache import CodeSet, SwapCodes, load_codes, load_or_encode, load_or_invert
from robust.gan.natural import load_model, resolve_model

__all__ = [
    "AdaController",
    "AugmentConfig",
    "AugmentPipe",
    "Conditioning",
    "Discriminator",
    "GANConfig",
    "Generator",
    "MappingNetwork",
    "PRESETS",
    "SynthesisNetwork",
    "Trainer",
    "TrainingData",
    "load",
    "load_demo",
    "load_generator",
    "prepare_data",
    "preset",
    "save_generator",
    "LatentPrior", "latent_stats", "prompt_prior", "sample_ws", "synthesize",
    "InversionConfig", "InversionResult", "invert_batch",
    "Encoder", "EncoderTraining", "load_encoder", "save_encoder", "train_encoder",
    "DIRECTION_FINDERS", "Directions", "calibrate_ranges", "find_directions", "load_directions", "score_directions", "select_directions",
    "CodeSet", "SwapCodes", "load_codes", "load_or_encode", "load_or_invert",
    "load_model", "resolve_model",
]
