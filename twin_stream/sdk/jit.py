"""The one way kernels are compiled: numba's `njit`, cached on disk, without the GIL.

`NUMBA_DISABLE_JIT=1` runs every kernel as plain Python (breakpoints, prints, coverage);
results are the same. The on-disk cache (`__pycache__` beside each model, or
`NUMBA_CACHE_DIR`) keeps a warm start short: the first start compiles, later ones load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])


def kernel(fn: F) -> F:
    """Compile `fn` (a loop over numpy arrays and scalars) with numba, cached."""
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)  # type: ignore[return-value]
