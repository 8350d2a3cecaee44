"""Exact empirical NTK blocks of a :class:`ntklib.models.Classifier` (paper §2.2, §3).

For a classifier z(x) = W h(θ, x) + b with features h (d outputs) and logits z (C outputs), the
per-output kernels are

    Θ_{cc'}(x, x') = ⟨∂z_c(x)/∂θ_all, ∂z_{c'}(x')/∂θ_all⟩       over θ_all = (θ, W, b)
    Θʰ_{jj'}(x, x') = ⟨∂h_j(x)/∂θ,    ∂h_{j'}(x')/∂θ⟩          over the feature extractor's θ only.

They share one object, the per-sample feature Jacobian J(x) = ∂h(x)/∂θ ∈ R^{d×P}:

    Θʰ_{jj'}(x, x') = J_j(x) J_{j'}(x')ᵀ
    Θ_{cc'}(x, x')  = W_c J(x) J(x')ᵀ W_{c'}ᵀ + δ_{cc'} (⟨h(x), h(x')⟩ + 1)

(the last term is the W and b part: ∂z_c/∂W_{c'j} = δ_{cc'} h_j, ∂z_c/∂b_{c'} = δ_{cc'}). The engine
therefore computes J once — reverse mode, one backward pass per (sample, feature neuron), vmapped —
and obtains every block by contractions: Θʰ_jj = J_j J_jᵀ and, with G = W J ∈ R^{N×C×P},
Θ_cc = G_c G_cᵀ + H Hᵀ + 1. The released code of the paper instead took two gradients for every
(output, pair of samples); see ``bench/ntk_speed.py`` for the comparison.

**Eval mode.** The kernels are those of the network in *eval* mode: BatchNorm uses its running
statistics. In train mode BatchNorm couples the samples of a batch (each h(x) depends on every x in
the batch through the batch mean and variance), so a per-sample Jacobian ∂h(x)/∂θ is not defined
without fixing the rest of the batch, and vmapping a per-sample function over the batch silently
computes something else (batch statistics of a batch of one) — the same warning neural-tangents
gives for batch-coupled layers.

**Precision.** The engine computes in full float32 on every platform. All contractions use
``precision=HIGHEST`` and the model itself is traced under
``jax.default_matmul_precision("highest")``, so on a GPU neither the backward passes nor the
contractions use TF32, which is JAX's default for float32 matmuls and convolutions on
recent NVIDIA GPUs. The reason is that the quantities of interest are small differences of large
means. At initialisation γ_c and γ_n can agree to a few 1e-5 relative, while TF32 gradients move
a kernel mean by 1e-4 to 1e-3 relative (a ResNet20 kernel mean was off by 1.4e-3 relative in our measurement).
``bench/ntk_speed.py`` checks the engine against a per-pair reference at ``highest``, to 1e-5
relative on the statistics. On a CPU the setting changes nothing, because the default there is
already full float32. Float64 works unchanged: pass float64 inputs and parameters with
``jax_enable_x64`` on.

Training (:mod:`ntklib.train`) sets no precision of its own. It runs at the platform default
(TF32 on such GPUs), as the paper's code trained at its framework's defaults. Only the
measurement of the kernels is exact.

**Memory.** The feature Jacobian of all N samples is N·d·P numbers. For ResNet20 at N = 120
(d = 64, P ≈ 0.27 M) that is 120·64·0.27e6·4 B ≈ 8.3 GB in float32, plus G = W J with
N·C·P ≈ 1.3 GB (C = 10). ``chunk_size`` bounds the first term: the Jacobian is computed for
``chunk_size`` feature neurons at a time (a loop over neuron chunks), so the peak is about
(chunk_size + C)·N·P floats plus the chunk's backward-pass activations, e.g. ≈ 3.4 GB for ResNet20
with chunk_size = 16. ``sample_chunk_size`` further bounds the activations of the vmapped backward
passes (samples processed ``sample_chunk_size`` at a time with ``lax.map``; a rolled loop, slow on
XLA:CPU, so use it only when memory demands). Off-diagonal feature
blocks Θʰ_{jj'} couple neuron chunks; with n_c = ceil(d / chunk_size) > 1 chunks they are obtained
by recomputing the Jacobian of every other chunk, i.e. at about (n_c + 1) times the Jacobian cost.
:func:`feature_norms_fn` gives the norms ‖Θʰ_{jj'}‖_F of the cross-blocks of a chosen subset of
n neurons from the Jacobian rows of those neurons only (n²N²P flops instead of d²N²P).

**Chunk loop.** ``loop`` chooses how the loop over neuron chunks is compiled. "unrolled" is a
Python loop: XLA sees one copy of the chunk's backward passes per chunk, which runs fastest on
XLA:CPU but compiles for longer with every chunk (a ResNet20 NTK of 4 chunks compiled for
41–44 s on an H200). "rolled" is one ``lax.scan`` over the chunks, so its compile time does not
grow with their number; on XLA:CPU it ran 1.4–1.6× slower. The default "auto" unrolls on the CPU
and rolls on accelerators. ``bench/compile_time.py`` measures both.

Example:
    >>> model = build_model("mlp", 3)  # doctest: +SKIP
    >>> variables = model.init(jax.random.key(0), x)  # x: (6, 8) float32  # doctest: +SKIP
    >>> ntk = block_ntk_fn(model, offdiag="norms")(variables, x)  # doctest: +SKIP
    >>> ntk.logits.shape, ntk.features.shape, ntk.logits_norms.shape  # (3, 6, 6), (32, 6, 6), (3, 3)  # doctest: +SKIP

The block statistics, alignments and invariant metrics of these kernels, as record columns, are in
:mod:`ntklib.measure`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from numpy.typing import ArrayLike

__all__ = [
    "OffDiagonal",
    "ChunkLoop",
    "resolve_loop",
    "ClassifierSplit",
    "split_classifier",
    "BlockNTK",
    "block_ntk_fn",
    "block_ntk",
    "frobenius_norms",
    "feature_norms_fn",
]

PyTree = Any
_HIGHEST = lax.Precision.HIGHEST


class OffDiagonal(str, enum.Enum):
    """Which off-diagonal blocks Θ_{cc'}, Θʰ_{jj'} (c ≠ c', j ≠ j') :func:`block_ntk_fn` returns."""

    NONE = "none"
    """Only the diagonal blocks Θ_cc and Θʰ_jj (the cheapest; what the block statistics need)."""
    LOGITS = "logits"
    """Also the full logit blocks Θ_{cc'} (C, C, N, N) and their norms, but no feature cross-blocks
    (cheap: C²N²P flops, against d²N²P for the feature cross-blocks)."""
    NORMS = "norms"
    """Also the Frobenius norms ‖Θ_{cc'}‖_F (C, C) and ‖Θʰ_{jj'}‖_F (d, d)."""
    FULL = "full"
    """Also the full (C, C, N, N) and (d, d, N, N) kernels (and their norms)."""

    @classmethod
    def _missing_(cls, value: object) -> OffDiagonal:
        """``OffDiagonal("some")`` raises a ValueError that lists the valid choices."""
        valid = ", ".join(mode.value for mode in cls)
        raise ValueError(f"unknown offdiag {value!r}; valid choices: {valid}")


class ClassifierSplit(NamedTuple):
    """A Classifier cut into its feature function and its linear head."""

    features: Callable[[PyTree, Array], Array]
    """h(θ_f, x) -> (B, d), in eval mode (BatchNorm uses running statistics, closed over)."""
    feature_params: PyTree
    """θ_f = variables["params"]["features"]."""
    weights: Array
    """W (C, d) (the transpose of the Dense kernel)."""
    bias: Array
    """b (C,)."""


def _features_eval(module, x: Array) -> Array:
    return module.features(x, train=False)


def split_classifier(model, variables: Mapping[str, Any]) -> ClassifierSplit:
    """Split a :class:`~ntklib.models.Classifier` and its variables into h(θ_f, ·), θ_f, W, b.

    The feature function runs the extractor in eval mode: with BatchNorm the batch statistics are
    replaced by the running averages in ``variables["batch_stats"]``, which makes h(x) a function of
    x alone so that per-sample Jacobians are well defined (in train mode they are not, and vmapping
    over samples would silently change the function; see the module docstring).

    Args:
        model: a Classifier (submodules ``features`` and ``classifier``).
        variables: ``{"params": {"features": ..., "classifier": {"kernel": (d, C), "bias": (C,)}},
            "batch_stats": {"features": ...}}`` (``batch_stats`` only with BatchNorm).

    Raises:
        ValueError: naming ``variables`` when there is no ``features``/``classifier`` split.
    """
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping) or "features" not in params or "classifier" not in params:
        keys = list(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            "variables must hold params['features'] and params['classifier'] (an ntklib.models.Classifier); "
            f"got params keys {keys}"
        )
    head = params["classifier"]
    if not isinstance(head, Mapping) or "kernel" not in head or "bias" not in head:
        raise ValueError("variables['params']['classifier'] must hold a dense 'kernel' (d, C) and 'bias' (C,)")
    state = {
        name: {"features": coll["features"]}
        for name, coll in variables.items()
        if name != "params" and isinstance(coll, Mapping) and "features" in coll
    }

    def features(feature_params: PyTree, x: Array) -> Array:
        return model.apply({"params": {"features": feature_params}, **state}, x, method=_features_eval)

    return ClassifierSplit(features, params["features"], jnp.asarray(head["kernel"]).T, jnp.asarray(head["bias"]))


class BlockNTK(NamedTuple):
    """Per-output NTK blocks on a batch of N samples (C logits, d features).

    Fields that were not requested are ``None``.
    """

    logits: Array
    """Θ_cc (C, N, N), the NTK of logit c w.r.t. all parameters (θ, W, b)."""
    features: Array
    """Θʰ_jj (d, N, N), the kernel of feature j w.r.t. the feature extractor's parameters only."""
    h: Array
    """Batch features, (N, d) (row i = h(x_i)); transpose for the paper's H (d, N)."""
    logits_norms: Array | None = None
    """‖Θ_{cc'}‖_F, (C, C); with ``offdiag`` "logits", "norms" or "full"."""
    features_norms: Array | None = None
    """‖Θʰ_{jj'}‖_F, (d, d); with ``offdiag`` "norms" or "full"."""
    logits_full: Array | None = None
    """Θ_{cc'}, (C, C, N, N); with ``offdiag`` "logits" or "full"."""
    features_full: Array | None = None
    """Θʰ_{jj'}, (d, d, N, N); with ``offdiag="full"``."""

    @property
    def logits_trace(self) -> Array:
        """Σ_c Θ_cc (N, N), the traced NTK."""
        return self.logits.sum(axis=0)

    @property
    def features_trace(self) -> Array:
        """Σ_j Θʰ_jj (N, N), the traced feature kernel."""
        return self.features.sum(axis=0)


def _flat_leaves(tree: PyTree, lead: int) -> list[Array]:
    """Leaves reshaped to (*first ``lead`` dims, p_leaf)."""
    return [leaf.reshape(*leaf.shape[:lead], -1) for leaf in jax.tree_util.tree_leaves(tree)]


def _sum_einsum(spec: str, xs: list[Array], ys: list[Array]) -> Array:
    """Σ over parameter leaves of einsum(spec, x_leaf, y_leaf) at HIGHEST precision."""
    return functools.reduce(jnp.add, (jnp.einsum(spec, x, y, precision=_HIGHEST) for x, y in zip(xs, ys, strict=True)))


def frobenius_norms(blocks: Array) -> Array:
    """Frobenius norms over the last two axes: (..., N, N) -> (...).

    Example:
        >>> blocks = jnp.stack([jnp.eye(2), 3 * jnp.ones((2, 2))])  # (2, N, N) with N = 2
        >>> [round(v, 6) for v in frobenius_norms(blocks).tolist()]  # √2 and √(4 · 3²)
        [1.414214, 6.0]
    """
    return jnp.sqrt(jnp.sum(jnp.square(blocks), axis=(-2, -1)))


class ChunkLoop(str, enum.Enum):
    """How :func:`block_ntk_fn` loops over the neuron chunks of the feature Jacobian."""

    AUTO = "auto"
    """Unrolled on the CPU and rolled on accelerators (GPU, TPU), as :func:`resolve_loop` decides."""
    UNROLLED = "unrolled"
    """A Python loop, with one copy of the chunk's program per chunk. Runs fastest on the CPU, and
    its compile time grows with the number of chunks."""
    ROLLED = "rolled"
    """One ``lax.scan`` over the chunks, with a single copy of the chunk's program, so the compile
    time does not grow with the number of chunks."""

    @classmethod
    def _missing_(cls, value: object) -> ChunkLoop:
        """``ChunkLoop("loopy")`` raises a ValueError that names ``loop`` and lists the valid choices."""
        valid = ", ".join(mode.value for mode in cls)
        raise ValueError(f"unknown loop {value!r}; valid choices: {valid}")


def resolve_loop(loop: ChunkLoop | str, backend: str | None = None) -> ChunkLoop:
    """The loop form that ``loop`` means on ``backend`` (default: ``jax.default_backend()``):
    "auto" is "unrolled" on ``"cpu"`` and "rolled" elsewhere; the other two are themselves.

    On XLA:CPU the rolled loop ran 1.4–1.6× slower than the unrolled one (``bench/RESULTS.md``,
    *Compile time*); on a GPU the unrolled program of 4 chunks compiled for 41–44 s.

    Raises:
        ValueError: naming ``loop`` when it is not one of "auto", "unrolled", "rolled".

    Example:
        >>> resolve_loop("auto", backend="cpu").value, resolve_loop("auto", backend="gpu").value
        ('unrolled', 'rolled')
        >>> resolve_loop("rolled", backend="cpu").value
        'rolled'
    """
    loop = ChunkLoop(loop)
    if loop is not ChunkLoop.AUTO:
        return loop
    backend = jax.default_backend() if backend is None else backend
    return ChunkLoop.UNROLLED if backend == "cpu" else ChunkLoop.ROLLED


class _Chunks(NamedTuple):
    """What the chunk loop produces (c: n_chunks · dc neurons, padded)."""

    diag: Array
    """Θʰ_jj of every padded neuron, (c, N, N)."""
    g: list[Array]
    """G = W J, leaves (N, C, p)."""
    cross: Array | None
    """Θʰ_{jj'}, (c, c, N, N), when the feature cross-blocks are wanted."""


def _unrolled_chunks(chunk_jacobian, bases: np.ndarray, w: Array, want_cross: bool) -> _Chunks:
    """The chunk loop as a Python loop (fully unrolled): the bases are NumPy constants, so that XLA
    can specialise the one-hot backward passes. On XLA:CPU it runs fastest; the compile time grows
    with the number of chunks."""
    diag_blocks, cross_rows = [], []
    g: list[Array] = []
    for r, basis in enumerate(bases):
        jr = chunk_jacobian(basis)
        diag_blocks.append(_sum_einsum("ajp,bjp->jab", jr, jr))  # (dc, N, N)
        w_chunk = jnp.asarray(w @ basis.T)  # (C, dc): W's columns of the chunk's neurons
        g_chunk = [jnp.einsum("ck,akp->acp", w_chunk, j, precision=_HIGHEST) for j in jr]
        g = [a + b for a, b in zip(g, g_chunk, strict=True)] if g else g_chunk
        if want_cross:
            # Row r of the (n_chunks, n_chunks) grid of (dc, dc, N, N) feature cross-blocks:
            # (dc, n_chunks·dc, N, N).
            row = [jr if s == r else chunk_jacobian(b) for s, b in enumerate(bases)]
            cross_rows.append(jnp.concatenate([_sum_einsum("ajp,bkp->jkab", jr, js) for js in row], axis=1))
    return _Chunks(jnp.concatenate(diag_blocks), g, jnp.concatenate(cross_rows) if want_cross else None)


def _rolled_chunks(chunk_jacobian, bases: np.ndarray, w: Array, want_cross: bool, g0: list[Array]) -> _Chunks:
    """The chunk loop as one ``lax.scan`` over the chunks' bases (traced data). The scan carries
    G = W J (``g0``: zeros, leaves (N, C, p)) and emits each chunk's diagonal blocks (dc, N, N)
    and, with ``want_cross``, its row of cross-blocks, from an inner scan over the chunks (which
    reuses the chunk's own Jacobian on the diagonal of the grid)."""
    n_chunks, dc, _ = bases.shape
    index = jnp.arange(n_chunks)
    traced = jnp.asarray(bases)

    def step(g: list[Array], item: tuple[Array, Array]) -> tuple[list[Array], tuple[Array, Array | None]]:
        r, basis = item
        jr = chunk_jacobian(basis)
        diag = _sum_einsum("ajp,bjp->jab", jr, jr)  # (dc, N, N)
        w_chunk = jnp.matmul(w, basis.T, precision=_HIGHEST)  # (C, dc)
        g = [a + jnp.einsum("ck,akp->acp", w_chunk, j, precision=_HIGHEST) for a, j in zip(g, jr, strict=True)]
        row = None
        if want_cross:

            def cross(_: None, other: tuple[Array, Array]) -> tuple[None, Array]:
                s, basis_s = other
                js = lax.cond(s == r, lambda: jr, lambda: chunk_jacobian(basis_s))
                return None, _sum_einsum("ajp,bkp->jkab", jr, js)  # (dc, dc, N, N)

            _, blocks = lax.scan(cross, None, (index, traced))  # (n_chunks, dc, dc, N, N)
            n = blocks.shape[-1]
            row = blocks.transpose(1, 0, 2, 3, 4).reshape(dc, n_chunks * dc, n, n)
        return g, (diag, row)

    g, (diag, rows) = lax.scan(step, g0, (index, traced))
    n = diag.shape[-1]
    cross_all = None if rows is None else rows.reshape(n_chunks * dc, n_chunks * dc, n, n)
    return _Chunks(diag.reshape(n_chunks * dc, n, n), g, cross_all)


def _feature_jacobian(split: ClassifierSplit, x: Array, basis: ArrayLike, sample_chunk_size: int | None) -> list[Array]:
    """Feature Jacobian rows ∂(basis · h(x_a))/∂θ of all samples: leaves (N, n, p) for basis (n, d)."""

    def sample_rows(xi: Array) -> list[Array]:
        _, vjp = jax.vjp(lambda t: split.features(t, xi[None])[0], split.feature_params)
        (rows,) = jax.vmap(vjp)(basis)
        return _flat_leaves(rows, 1)

    if sample_chunk_size is None or sample_chunk_size >= x.shape[0]:
        return jax.vmap(sample_rows)(x)
    return lax.map(sample_rows, x, batch_size=int(sample_chunk_size))


def _block_ntk(
    model,
    variables: PyTree,
    x: Array,
    *,
    offdiag: OffDiagonal,
    chunk_size: int | None,
    sample_chunk_size: int | None,
    loop: ChunkLoop = ChunkLoop.UNROLLED,
) -> BlockNTK:
    split = split_classifier(model, variables)
    theta, w = split.feature_params, split.weights
    h = split.features(theta, x)  # (N, d)
    n, d = h.shape
    dtype = h.dtype
    dc = d if chunk_size is None else min(int(chunk_size), d)
    n_chunks = -(-d // dc)
    # Rows of the identity (padded with zero rows to n_chunks * dc): cotangents selecting neurons.
    bases = np.eye(n_chunks * dc, d, dtype=dtype).reshape(n_chunks, dc, d)

    def chunk_jacobian(basis: ArrayLike) -> list[Array]:
        return _feature_jacobian(split, x, basis, sample_chunk_size)

    want_feat_off = offdiag in (OffDiagonal.NORMS, OffDiagonal.FULL)
    if loop is ChunkLoop.ROLLED and n_chunks > 1:  # one chunk: the two forms are the same program
        g0 = [jnp.zeros((n, w.shape[0], leaf.size), dtype) for leaf in jax.tree_util.tree_leaves(theta)]
        chunks = _rolled_chunks(chunk_jacobian, bases, w, want_feat_off, g0)
    else:
        chunks = _unrolled_chunks(chunk_jacobian, bases, w, want_feat_off)
    g = chunks.g  # G = W J, leaves (N, C, p)

    # W and b part of Θ_cc': δ_cc' (⟨h(x), h(x')⟩ + 1).
    head = jnp.einsum("ai,bi->ab", h, h, precision=_HIGHEST) + 1.0
    result = {"features": chunks.diag[:d], "h": h}
    if offdiag is OffDiagonal.NONE:
        result["logits"] = _sum_einsum("acp,bcp->cab", g, g) + head[None]
    else:
        # All C² blocks at once: one (N·C, N·C) Gram matrix of the rows of G.
        c = w.shape[0]
        rows = [leaf.reshape(n * c, -1) for leaf in g]
        gram = _sum_einsum("ip,jp->ij", rows, rows)  # (N·C, N·C)
        logits_full = (
            gram.reshape(n, c, n, c).transpose(1, 3, 0, 2)
            + jnp.eye(c, dtype=dtype)[:, :, None, None] * head[None, None]
        )
        result["logits"] = jnp.diagonal(logits_full, axis1=0, axis2=1).transpose(2, 0, 1)
        result["logits_norms"] = frobenius_norms(logits_full)
        if offdiag in (OffDiagonal.LOGITS, OffDiagonal.FULL):
            result["logits_full"] = logits_full
    if want_feat_off:
        assert chunks.cross is not None
        features_full = chunks.cross[:d, :d]  # (d, d, N, N)
        result["features_norms"] = frobenius_norms(features_full)
        if offdiag is OffDiagonal.FULL:
            result["features_full"] = features_full
    return BlockNTK(**result)


def block_ntk_fn(
    model,
    *,
    offdiag: OffDiagonal | str = OffDiagonal.NONE,
    chunk_size: int | None = None,
    sample_chunk_size: int | None = None,
    loop: ChunkLoop | str = ChunkLoop.AUTO,
) -> Callable[[PyTree, Array], BlockNTK]:
    """A jitted ``ntk_fn(variables, x) -> BlockNTK`` computing exact per-output NTK blocks.

    Θ_cc (C, N, N) w.r.t. all parameters, Θʰ_jj (d, N, N) w.r.t. the feature extractor's, and on
    request off-diagonal blocks or their norms; all from one feature Jacobian J (N, d, P), see the
    module docstring for the formulas, the eval-mode caveat and the memory estimate.

    Args:
        model: a :class:`~ntklib.models.Classifier`.
        offdiag: :class:`OffDiagonal` (or its string value) — "none", "logits", "norms" or "full".
        chunk_size: feature neurons per Jacobian chunk (None: all d at once). Bounds the memory of
            J to N·chunk_size·P numbers.
        sample_chunk_size: samples per vmapped backward batch within a chunk (None: all N).
        loop: :class:`ChunkLoop` (or its string value) — the loop over neuron chunks: "unrolled",
            "rolled" (one ``lax.scan``), or "auto" (:func:`resolve_loop`: unrolled on the CPU,
            rolled on accelerators), resolved on the default backend when ``block_ntk_fn`` is
            called. Both give the same kernels to rounding; with a single chunk they are the same
            program.

    Returns:
        ``ntk_fn(variables, x)``; x is (N, ...) in the model's input layout. Inputs and parameters
        of dtype float64 (with ``jax_enable_x64``) give float64 kernels.

    Raises:
        ValueError: naming ``offdiag``, ``chunk_size``, ``sample_chunk_size`` or ``loop`` when it
            is not valid.

    Example:
        >>> ntk_fn = block_ntk_fn(model, offdiag="norms", chunk_size=16)  # doctest: +SKIP
        >>> ntk = ntk_fn(variables, x)  # x: (120, 32, 32, 3)  # doctest: +SKIP
        >>> ntk.logits.shape  # (10, 120, 120) Θ_cc  # doctest: +SKIP
        >>> ntk.features.shape  # (64, 120, 120) Θʰ_jj for ResNet20  # doctest: +SKIP
    """
    offdiag = OffDiagonal(offdiag)
    for name, value in (("chunk_size", chunk_size), ("sample_chunk_size", sample_chunk_size)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    form = resolve_loop(loop)
    jitted = jax.jit(
        functools.partial(
            _block_ntk,
            model,
            offdiag=offdiag,
            chunk_size=chunk_size,
            sample_chunk_size=sample_chunk_size,
            loop=form,
        )
    )

    def ntk_fn(variables: PyTree, x: ArrayLike) -> BlockNTK:
        with jax.default_matmul_precision("highest"):
            return jitted(variables, jnp.asarray(x))

    return ntk_fn


@functools.lru_cache(maxsize=32)
def _cached_ntk_fn(model, offdiag: OffDiagonal, chunk_size, sample_chunk_size, loop: ChunkLoop = ChunkLoop.AUTO):
    return block_ntk_fn(
        model, offdiag=offdiag, chunk_size=chunk_size, sample_chunk_size=sample_chunk_size, loop=resolve_loop(loop)
    )


def block_ntk(
    model,
    variables: PyTree,
    x: ArrayLike,
    *,
    offdiag: OffDiagonal | str = OffDiagonal.NONE,
    chunk_size: int | None = None,
    sample_chunk_size: int | None = None,
    loop: ChunkLoop | str = ChunkLoop.AUTO,
) -> BlockNTK:
    """One-shot :func:`block_ntk_fn` (the jitted function is cached per model and options)."""
    return _cached_ntk_fn(model, OffDiagonal(offdiag), chunk_size, sample_chunk_size, resolve_loop(loop))(variables, x)


def feature_norms_fn(
    model, neurons: ArrayLike, *, sample_chunk_size: int | None = None
) -> Callable[[PyTree, Array], Array]:
    """A jitted ``fn(variables, x) -> (n, n)`` of ‖Θʰ_{jj'}‖_F for j, j' in a subset of neurons.

    The feature cross-blocks of :func:`block_ntk_fn` (``offdiag="norms"``) cost d²N²P flops for all
    d neurons; restricted to n of them they cost n²N²P, plus the Jacobian of those n rows only:

        Θʰ_{jj'}(x_a, x_b) = J_j(x_a) J_{j'}(x_b)ᵀ,   out[s, t] = ‖Θʰ_{neurons[s] neurons[t]}‖_F.

    Args:
        model: a :class:`~ntklib.models.Classifier`.
        neurons: n distinct feature indices in [0, d), n >= 1.
        sample_chunk_size: samples per vmapped backward batch (None: all N), as in
            :func:`block_ntk_fn`.

    Returns:
        ``fn(variables, x)`` -> (n, n) Frobenius norms over the N×N sample pairs, in eval mode.

    Example:
        >>> norms = feature_norms_fn(model, neurons=range(16))(variables, x)  # doctest: +SKIP
        >>> norms.shape  # (16, 16): diagonal ‖Θʰ_jj‖_F, off-diagonal ‖Θʰ_{jj'}‖_F  # doctest: +SKIP
    """
    idx = np.asarray(neurons)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"neurons must be a non-empty 1-D sequence of indices >= 0, got {neurons!r}")
    if len(np.unique(idx)) != idx.size:
        raise ValueError(f"neurons must be distinct, got {idx.tolist()}")
    if sample_chunk_size is not None and (int(sample_chunk_size) != sample_chunk_size or sample_chunk_size < 1):
        raise ValueError(f"sample_chunk_size must be a positive integer or None, got {sample_chunk_size!r}")

    def norms(variables: PyTree, x: Array) -> Array:
        split = split_classifier(model, variables)
        d = split.weights.shape[1]
        if idx.max() >= d:
            raise ValueError(f"neurons must lie in [0, d = {d}), got {idx.max()}")
        basis = np.eye(d, dtype=x.dtype)[idx]  # (n, d) one-hot rows
        rows = _feature_jacobian(split, x, basis, sample_chunk_size)  # leaves (N, n, p)
        return frobenius_norms(_sum_einsum("ajp,bkp->jkab", rows, rows))

    jitted = jax.jit(norms)

    def fn(variables: PyTree, x: ArrayLike) -> Array:
        with jax.default_matmul_precision("highest"):
            return jitted(variables, jnp.asarray(x))

    return fn
