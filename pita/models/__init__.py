"""Diffusion models of one rung: backbones, EDM-preconditioned score and energy models, PitaModel."""
from .backbones import BACKBONES, DEFAULT_OPTIONS, make_backbone
from .pita_model import (PitaModel, check_checkpoint_system, checkpoint_system_name, load_checkpoint,
                         save_checkpoint)
from .preconditioning import EDMPreconditioning, EnergyModel, ScoreModel

__all__ = ["BACKBONES", "DEFAULT_OPTIONS", "make_backbone", "PitaModel", "load_checkpoint", "save_checkpoint",
           "check_checkpoint_system", "checkpoint_system_name",
           "EDMPreconditioning", "EnergyModel", "ScoreModel"]
