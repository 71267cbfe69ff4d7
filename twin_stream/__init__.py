"""twin-stream, layer 1: the platform (model contract, registry, settings, codec, engine,
replay, simulator, CLI, local broker). Battery science lives in `models/`.

In a notebook: ``twin_stream.run_twin(df_or_path, settings)`` runs the twin on a pandas
DataFrame or a recorded file and returns DataFrames of alerts, estimates and dead letters,
the final state and the summary (`twin_stream.replay.notebook`; imported on first use, so
``import twin_stream`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twin_stream.replay.notebook import TwinResult, run_twin

__version__ = "0.1.0"

_LAZY = {"run_twin": "twin_stream.replay.notebook", "TwinResult": "twin_stream.replay.notebook"}

__all__ = ["TwinResult", "__version__", "run_twin"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
