"""endolight: restore dim, unevenly lit endoscope images and surgical video in real time."""

from endolight.checkpoint import load_model
from endolight.enhancer import Enhancer, enhance

__all__ = ["Enhancer", "enhance", "load_model"]
__version__ = "0.1.0"
