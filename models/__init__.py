"""Layer 2, battery science: one folder per model, each with `model.json` and pure numpy code.

Models import only from `twin_stream` (the contract); never faust, aiokafka or kafka.
`twin_stream.sdk.registry.discover_models()` imports every folder here that has a `model.json`.
"""
