"""The model SDK: everything a battery model imports, from one place.

    from twin_stream import sdk

    @sdk.register_model("my_model")
    class MyModel(sdk.KernelModel): ...

- contract: `Model`, `KernelModel`, `register_model`, `Manifest`, `ContractError`;
- data: `Block` (columns of many batteries), `Chunk` (one battery), `BatterySpec`;
- kernels: `kernel` (numba, cached), `emit`/`estimate`/`alert`/`room`, `debounce_step`;
- state: `StateArrays` (one row per battery slot, fields declared in model.json);
- testing: `twin_stream.sdk.testing.check_model`.
"""

from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.block import Block, single_battery_block
from twin_stream.sdk.chunk import Chunk, build_chunk
from twin_stream.sdk.contract import (
    ContractError,
    Manifest,
    Model,
    State,
    register_model,
    registered_models,
)
from twin_stream.sdk.debounce import CHANNEL, CLEAR, NONE, RAISE, TALLY
from twin_stream.sdk.debounce import step as debounce_step
from twin_stream.sdk.emit import ESTIMATE, OUT_COLUMNS, alert, emit, estimate, room
from twin_stream.sdk.jit import kernel
from twin_stream.sdk.model import KernelModel, run_kernel
from twin_stream.sdk.outputs import Alert, Estimate, Output
from twin_stream.sdk.state import StateArrays, StateSpec

__all__ = [
    "CHANNEL",
    "CLEAR",
    "ESTIMATE",
    "NONE",
    "OUT_COLUMNS",
    "RAISE",
    "TALLY",
    "Alert",
    "BatterySpec",
    "Block",
    "Chunk",
    "ContractError",
    "Estimate",
    "KernelModel",
    "Manifest",
    "Model",
    "Output",
    "State",
    "StateArrays",
    "StateSpec",
    "alert",
    "build_chunk",
    "debounce_step",
    "emit",
    "estimate",
    "kernel",
    "register_model",
    "registered_models",
    "room",
    "run_kernel",
    "single_battery_block",
]
