"""How one pass over a device-resident set runs: one jitted ``jax.lax.scan``, or a Python loop of
one jitted step.

The data stay on the device and each pass gathers its batches there from an index array, so the
scan has no per-step Python at all. On a CPU, though, XLA runs convolutions inside a while loop
(``lax.scan``) about 40× slower than the same jitted step called from Python (ResNet20, batch
120, 32×32: 31 s vs 0.76 s per step on a 2-core machine), so ``"auto"`` loops there and scans on
accelerators. Both modes give the same numbers up to float rounding.

:mod:`ntklib.train` builds its training epoch (:func:`stepping_pass`) and its test-set evaluation
(:func:`masked_totals_pass`) from these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

EPOCH_MODES = ("auto", "scan", "loop")
"""The ways a pass can run, ``auto`` (a loop on CPU, a scan elsewhere), ``scan`` or ``loop``."""

Step = Callable[..., tuple[Any, jax.Array, jax.Array]]
"""The signature of a step, ``step(state, images, labels, idx, lr) -> (state, loss, accuracy)`` on the batch ``idx``."""
Totals = Callable[..., tuple[jax.Array, jax.Array]]
"""The signature of a batch total, ``totals(state, x, y, mask) -> (summed loss, number correct)``
over the unmasked rows."""


def resolve_epoch_mode(mode: str = "auto") -> str:
    """``"scan"`` or ``"loop"``: ``mode`` itself, or for ``"auto"`` the faster one on this backend.

    Raises:
        ValueError: naming ``epoch_mode`` when ``mode`` is not one of :data:`EPOCH_MODES`.
    """
    if mode not in EPOCH_MODES:
        raise ValueError(f"unknown epoch_mode {mode!r}; valid choices: {', '.join(EPOCH_MODES)}")
    if mode == "auto":
        return "loop" if jax.default_backend() == "cpu" else "scan"
    return mode


def stepping_pass(step: Step, mode: str = "auto") -> Callable:
    """``epoch(state, images, labels, batch_indices, lr) -> (state, losses, accs)``: ``step`` over
    the rows of ``batch_indices`` (steps, B), losses and accuracies stacked to (steps,).

    ``mode="scan"``: one jitted ``lax.scan`` that donates the state; ``"loop"``: a Python loop over
    the jitted, state-donating ``step``.
    """
    if resolve_epoch_mode(mode) == "loop":
        jit_step = jax.jit(step, donate_argnums=(0,))

        def epoch_loop(state, images, labels, batch_indices, lr):
            losses, accs = [], []
            for idx in batch_indices:
                state, value, acc = jit_step(state, images, labels, idx, lr)
                losses.append(value)
                accs.append(acc)
            return state, jnp.stack(losses), jnp.stack(accs)

        return epoch_loop

    def epoch(state, images, labels, batch_indices, lr):
        def body(state, idx):
            state, value, acc = step(state, images, labels, idx, lr)
            return state, (value, acc)

        state, (losses, accs) = jax.lax.scan(body, state, batch_indices)
        return state, losses, accs

    return jax.jit(epoch, donate_argnums=(0,))


def padded_batches(images: jax.Array, labels: jax.Array, batch_size: int):
    """``(images, labels, mask)`` of a whole set in batches of ``batch_size``: shapes
    (n_batches, batch_size, ...), the set zero-padded to a multiple of ``batch_size`` and ``mask``
    False on the padding."""
    n = images.shape[0]
    pad = (-n) % batch_size
    mask = jnp.arange(n + pad) < n
    images = jnp.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1))
    labels = jnp.pad(labels, (0, pad))
    shape = (-1, batch_size)
    return images.reshape(*shape, *images.shape[1:]), labels.reshape(shape), mask.reshape(shape)


def masked_totals_pass(totals: Totals, batch_size: int, mode: str = "auto") -> Callable:
    """``evaluate(state, images, labels) -> (mean loss, accuracy)`` over a whole set: ``totals``
    summed over :func:`padded_batches`, divided by the set's size n.

    ``mode="scan"``: one jitted ``lax.scan`` over the batches; ``"loop"``: a Python loop over the
    jitted ``totals``.
    """
    if resolve_epoch_mode(mode) == "loop":
        jit_totals = jax.jit(totals)

        def evaluate_loop(state, images, labels):
            total, correct = 0.0, 0
            for x, y, m in zip(*padded_batches(images, labels, batch_size), strict=True):
                batch_loss, batch_correct = jit_totals(state, x, y, m)
                total, correct = total + batch_loss, correct + batch_correct
            n = images.shape[0]
            return total / n, correct / n

        return evaluate_loop

    def evaluate(state, images, labels):
        def body(running, batch):
            batch_loss, batch_correct = totals(state, *batch)
            return (running[0] + batch_loss, running[1] + batch_correct), None

        zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        (total, correct), _ = jax.lax.scan(body, zero, padded_batches(images, labels, batch_size))
        n = images.shape[0]
        return total / n, correct / n

    return jax.jit(evaluate)
