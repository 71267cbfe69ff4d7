"""twin-stream, layer 1: the platform (model contract, registry, settings, codec, engine,
replay, simulator, CLI, local broker). Battery science lives in `models/`."""

__version__ = "0.1.0"
