"""The bilateral-grid Retinex network and its configuration."""

from endolight.model.config import ModelConfig
from endolight.model.deepupe import DeepUPE, Prediction

__all__ = ["DeepUPE", "ModelConfig", "Prediction"]
