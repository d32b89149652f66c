"""Fused CPU kernels for the inference fast path."""
