"""Bundled models, generated in code (no model files ship): see ``zoo``."""

from engine.models.zoo import MODELS, build_model, model_names

__all__ = ["MODELS", "build_model", "model_names"]
