"""The book's scale switch: every chapter runs at the ``default`` scale (CPU, minutes, embedded
data) unless the environment variable ``NTK_BOOK_SCALE`` says ``paper`` (GPU, the paper's protocol).
"""

from __future__ import annotations

import os

SCALES = ("default", "paper")
ENV_VAR = "NTK_BOOK_SCALE"


def book_scale(scale: str | None = None) -> str:
    """Return the scale a chapter runs at: ``scale`` if given, else ``$NTK_BOOK_SCALE``, else
    ``"default"``.

    Raises:
        ValueError: naming ``NTK_BOOK_SCALE`` (or ``scale``) when the value is not one of SCALES.
    """
    value = scale if scale is not None else os.environ.get(ENV_VAR, "default")
    if value not in SCALES:
        source = "scale" if scale is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {SCALES}, got {value!r}")
    return value
