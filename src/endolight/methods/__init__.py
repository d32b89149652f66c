"""Enhancement methods behind one interface: ``(H, W, 3)`` uint8 RGB in, same out."""

from endolight.methods.registry import LEARNED, METHODS, Method, get_method

__all__ = ["LEARNED", "METHODS", "Method", "get_method"]
