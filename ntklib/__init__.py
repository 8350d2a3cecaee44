"""ntklib: the reference implementation of "Neural (Tangent Kernel) Collapse" (NeurIPS 2023).

Modules, one per concept of the paper:

Theory (§3–§5, Appendix B)
    - :mod:`ntklib.block_kernel`  block-structured kernels, their eigenvalues and projectors (§3).
    - :mod:`ntklib.dynamics`      residual flow (§4.1), Theorem 4.1 and 5.1 flows, ODE integration.
    - :mod:`ntklib.invariant`     the invariant E (§5.2) and the decomposition H = M Y + H₂ V₂ᵀ.
    - :mod:`ntklib.collapse`      neural-collapse metrics NC1–NC4 (§2.1, App. B.4).

Empirical NTK (§2.2, §3)
    - :mod:`ntklib.ntk`           the engine: exact per-output NTK blocks of Flax classifiers.
    - :mod:`ntklib.kernel_stats`  block statistics, block-fit error and label alignment of kernels.
    - :mod:`ntklib.linearised`    the measured NTK as a linear model of training: first-order logit
      change, local elasticity, linearised descent.

Experiments (§6, Appendix C)
    - :mod:`ntklib.models`        VGG11/16, ResNet20, DenseNet40 as feature extractor + linear head.
    - :mod:`ntklib.data`          the pipeline: datasets as arrays, balanced batches, the embedded digits.
    - :mod:`ntklib.sources`       where MNIST, FashionMNIST and CIFAR-10 come from: IDX files, the Debian
      package, tensorflow-datasets (:mod:`ntklib.idx` reads the IDX format).
    - :mod:`ntklib.measure`       what one record measures: its columns, NC, kernel and invariant metrics.
    - :mod:`ntklib.config`        ``TrainConfig``: every field of a run, grouped, each with its check.
    - :mod:`ntklib.train`         the paper's training protocol and loop.
    - :mod:`ntklib.epochs`        how a pass over the data runs: one jitted lax.scan, or a loop of jitted steps.
    - :mod:`ntklib.rundir`        one run's directory: atomic files, status, records, checkpoints, locks.
    - :mod:`ntklib.results`       the table of runs: run directories loaded into pandas.
    - :mod:`ntklib.sweep`         learning-rate × init sweeps (:mod:`ntklib.ray_engine`: as Ray tasks).
    - :mod:`ntklib.observations`  §6's observations measured on a sweep.
    - :mod:`ntklib.plots`         the panes of the paper's Figure 2 (a–h) and Appendix C (i–j).
    - :mod:`ntklib.experiment`    the command line (``python -m ntklib.experiment``).
    - :mod:`ntklib.compilation`   counting and timing XLA compilations.

The book
    - :mod:`ntklib.book`          the chapters' conventions: scale, smoke size, seed, figure style and
      size, committed results.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ntklib")  # typed once, in pyproject.toml; the installed metadata carries it
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
