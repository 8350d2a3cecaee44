"""ntklib: the reference implementation of "Neural (Tangent Kernel) Collapse" (NeurIPS 2023).

Modules, one per concept of the paper:

- :mod:`ntklib.block_kernel`  block-structured kernels, their eigenvalues and projectors (§3).
- :mod:`ntklib.dynamics`      residual flow (§4.1), Theorem 4.1 and 5.1 flows, ODE integration.
- :mod:`ntklib.invariant`     the invariant E (§5.2) and the decomposition H = M Y + H₂ V₂ᵀ.
- :mod:`ntklib.collapse`      neural-collapse metrics NC1–NC4 (§2.1, App. B.4).
"""

__version__ = "0.1.0"
