"""Enhancement methods behind one interface: ``(H, W, 3)`` uint8 RGB in, same out."""

from endolight.methods.registry import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
