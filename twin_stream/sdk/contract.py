"""The model contract: the base class every battery model implements, and its manifest.

A model lives in `models/<name>/` with a `model.json` manifest and a class registered with
`@register_model("<name>")`. It is an incremental state machine: `process(chunk, state)`
returns the outputs of the chunk and the new state, does no I/O and keeps no hidden state,
so that feeding samples in one chunk or in many gives identical outputs and final state.
State is a JSON-serialisable dict (it goes to a changelog-backed table).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.outputs import Output
from twin_stream.sdk.state import StateSpec

State = dict[str, Any]


class ContractError(ValueError):
    """A model, manifest or parameter that breaks the contract; the message names it."""


class ManifestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str
    required: bool
    description: str = ""


class ManifestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["alert", "estimate"]
    unit: str
    description: str = ""
    severity: Literal["info", "warning", "critical"] | None = None  # alerts: the default
    message: str = ""  # alerts of kernel models: str.format template (code status cell value
    # threshold unit)


class ManifestParameter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["number", "integer", "boolean", "string"]
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: list[str] | None = None
    unit: str = ""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str
    inputs: dict[str, ManifestInput]
    outputs: dict[str, ManifestOutput]
    parameters: dict[str, ManifestParameter] = {}
    state: StateSpec | None = None  # kernel models: their state arrays

    def validate_params(self, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Defaults filled in, types and ranges checked; errors name `where.<key>`."""
        unknown = sorted(set(raw) - set(self.parameters))
        if unknown:
            raise ContractError(
                f"{where}.{unknown[0]}: unknown parameter of model {self.name!r} "
                f"(known: {', '.join(sorted(self.parameters)) or 'none'})"
            )
        out: dict[str, Any] = {}
        for key, p in self.parameters.items():
            value = raw.get(key, p.default)
            out[key] = _check_param(value, p, f"{where}.{key}")
        return out


def _check_param(value: Any, p: ManifestParameter, where: str) -> Any:
    if p.type == "boolean":
        if not isinstance(value, bool):
            raise ContractError(f"{where}: expected a boolean, got {value!r}")
        return value
    if p.type == "string":
        if not isinstance(value, str):
            raise ContractError(f"{where}: expected a string, got {value!r}")
        if p.enum is not None and value not in p.enum:
            raise ContractError(f"{where}: {value!r} is not one of {', '.join(p.enum)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{where}: expected a {p.type}, got {value!r}")
    if p.type == "integer" and not float(value).is_integer():
        raise ContractError(f"{where}: expected an integer, got {value!r}")
    if p.minimum is not None and value < p.minimum:
        raise ContractError(f"{where}: {value!r} is below the minimum {p.minimum:g}")
    if p.maximum is not None and value > p.maximum:
        raise ContractError(f"{where}: {value!r} is above the maximum {p.maximum:g}")
    return int(value) if p.type == "integer" else float(value)


def load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path}: invalid model manifest: {exc}") from None


class Model(ABC):
    """Base class of battery models. Subclasses set nothing by hand: the registry does.

    `params` are the manifest-validated parameters; `spec` the battery's resolved spec
    (chemistry, capacity, cells, limits). One instance serves every battery with that spec.
    """

    name: ClassVar[str]
    manifest: ClassVar[Manifest]

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        self.params = dict(params)
        self.spec = spec

    @abstractmethod
    def initial_state(self) -> State:
        """The state of a battery never seen before."""

    @abstractmethod
    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        """Outputs of `chunk` and the new state; must not mutate `state` in place."""


ModelT = TypeVar("ModelT", bound=type[Model])

_REGISTRY: dict[str, type[Model]] = {}


@overload
def register_model(arg: ModelT) -> ModelT: ...
@overload
def register_model(arg: str | None = None) -> Callable[[ModelT], ModelT]: ...


def register_model(arg: ModelT | str | None = None) -> ModelT | Callable[[ModelT], ModelT]:
    """Class decorator: registers the model under the name its `model.json` (beside its
    module) gives, which is where the name is written; ``@register_model`` bare. A name given
    (``@register_model("x")``, as before) must agree with the manifest."""
    if isinstance(arg, type):
        return _register(arg, None)
    return lambda cls: _register(cls, arg)


def _register(cls: ModelT, expected: str | None) -> ModelT:
    import sys

    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if module_file is None:
        raise ContractError(f"model {cls!r}: cannot locate its module to find model.json")
    manifest = load_manifest(Path(module_file).parent / "model.json")
    name = manifest.name
    if expected is not None and expected != name:
        raise ContractError(f"model {expected!r}: model.json names it {name!r}; they must agree")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ContractError(f"model {name!r} registered twice ({existing} and {cls})")
    if getattr(cls, "is_kernel_model", False):
        if manifest.state is None:
            raise ContractError(f"model {name!r}: a kernel model needs a 'state' in model.json")
        cls.state_spec = manifest.state  # type: ignore[attr-defined]
    cls.name = name
    cls.manifest = manifest
    _REGISTRY[name] = cls
    return cls


def registered_models() -> dict[str, type[Model]]:
    return dict(_REGISTRY)
