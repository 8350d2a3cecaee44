"""Strict numerics for the whole suite: float64 available.

Tests of float32 code paths pass float32 arrays explicitly; enabling x64 does not change the
dtype of float32 inputs.
"""

import jax

jax.config.update("jax_enable_x64", True)
