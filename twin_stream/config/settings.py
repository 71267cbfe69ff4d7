"""The one settings loader: defaults (these pydantic models), then a JSON file, then `TWIN_`
environment overrides, validated together.

Environment keys nest with double underscores. A value for a text setting (str, a secret,
a Literal of strings, or None of these) is taken as it is, so `TWIN_KAFKA__SASL_PASSWORD=12345`
is the text "12345"; any other value is JSON when it parses as JSON and text otherwise:
`TWIN_ENGINE__MAX_GAP_S=120`, `TWIN_KAFKA__BOOTSTRAP_SERVERS=host:9092`,
`TWIN_MODELS__ENABLED='["eq_cycles"]'`. An unknown key or an out-of-range value is one
`SettingsError` naming it. Battery specs: fleet defaults, overridden per battery id.

Secrets (`kafka.sasl_password`) are pydantic `SecretStr`: read them with
`.get_secret_value()`; repr, JSON dumps (`settings show`) and error messages show them as
"***". Dumping to JSON for another process that needs them takes
`model_dump_json(context=REVEAL_SECRETS)` (or `model_dump(mode="json", context=...)`).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
    model_validator,
)

from twin_stream.battery.chemistry import (
    Chemistry,
    ChemistryError,
    LimitSet,
    OcvTable,
    get_chemistry,
)
from twin_stream.battery.spec import BatterySpec

ENV_PREFIX = "TWIN_"
DEFAULT_MODELS = ["eq_cycles", "voltage_monitor", "imbalance_analysis", "soc_ocv_estimation"]
MASK = "***"
REVEAL_SECRETS: dict[str, Any] = {"reveal_secrets": True}
"""Serialization context that writes secrets in clear, e.g. for a settings file handed to a
worker process: `settings.model_dump_json(context=REVEAL_SECRETS)`."""
_SECRET_WORDS = ("password", "secret", "token")


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the key."""


def _dump_secret(value: SecretStr, info: SerializationInfo) -> str:
    if isinstance(info.context, Mapping) and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return MASK


Secret = Annotated[SecretStr, PlainSerializer(_dump_secret, when_used="json")]
"""A secret setting: hidden in repr, "***" in JSON dumps unless the context reveals it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None


class TopicSettings(_Strict):
    input: str = "twin.telemetry"
    alerts: str = "twin.alerts"
    estimates: str = "twin.estimates"
    deadletter: str = "twin.deadletter"
    partitions: int = Field(4, ge=1, le=4096)
    replication_factor: int = Field(1, ge=1, le=16)


class WorkerSettings(_Strict):
    app_id: str = "twin-stream"
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    store: Literal["rocksdb://", "memory://"] = "rocksdb://"
    data_dir: str = "twin-data"
    web_port: int = Field(6066, ge=1, le=65535)
    web_bind: str = Field(
        "127.0.0.1",
        description="address the worker's web server (metrics, health) listens on; "
        "0.0.0.0 to be scraped from other hosts",
    )
    web_tables: bool = Field(
        False,
        description="faust's /table/ views, which serve every battery's full state "
        "without authentication; off unless asked for",
    )
    broker_timeout_s: float = Field(
        8.0,
        gt=0,
        le=600,
        description="the broker not answering the worker's probe for this long turns "
        "liveness red and holds telemetry_stale off (the twin is deaf, not the batteries)",
    )
    commit_stall_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="input waiting and no commit for this long turns liveness red",
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="after SIGTERM/SIGINT the worker exits by this time even if the broker "
        "is unreachable (uncommitted work is aborted and redone by the next owner)",
    )
    misrouted: Literal["reroute", "deadletter"] = Field(
        "reroute",
        description="a record on another input partition than its key's murmur2 hash "
        "(a producer with librdkafka's crc32 partitioner): re-sent to the right partition "
        "in the same transaction, or dead-lettered; counted either way",
    )
    log_rate_limit_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="a repeated log line (same logger and message) is written at most once "
        "per this many seconds, with a count of those suppressed; 0 = no limit",
    )
    stale_after_s: float = Field(30.0, gt=0, le=86_400)
    take_max: int = Field(
        50_000,
        ge=1,
        le=1_000_000,
        description="most input records in one chunk (one engine pass and one table write "
        "per battery per chunk: a fleet of thousands of batteries needs large chunks to "
        "write each state once per many records); chunks are this big only when the worker "
        "is behind",
    )
    commit_on_alert: bool = Field(
        True,
        description="a chunk that raised or cleared an alert commits its transaction at "
        "once (read_committed consumers see the alert without waiting for the next commit "
        "tick); false: alerts wait for the tick like everything else",
    )
    take_within_s: float = Field(
        0.05, gt=0, le=10, description="longest wait for more records once one has arrived"
    )
    fetch_max_bytes_per_partition: int = Field(
        8 << 20,
        ge=64 << 10,
        le=256 << 20,
        description="input bytes one fetch may return per partition (Kafka's "
        "max.partition.fetch.bytes); faust's 1 MiB held one worker to ~10k records/s",
    )
    fetch_max_wait_ms: int = Field(
        50,
        ge=1,
        le=30_000,
        description="longest a fetch waits at the broker for new input (Kafka's "
        "fetch.max.wait.ms); faust's 1500 ms let input wait up to 1.5 s under load",
    )
    standby_replicas: int = Field(0, ge=0, le=8)


class EngineSettings(_Strict):
    allowed_lateness_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="out-of-order records within this are reordered; "
        "outputs wait this long in event time, so keep it small for fast alerts",
    )
    max_gap_s: float = Field(
        60.0,
        gt=0,
        le=86_400 * 30,
        description="an interval between two samples of a battery longer than this and than "
        "gap_factor x the battery's typical interval is a gap: not integrated, reported as a "
        "data_gap estimate",
    )
    gap_factor: float = Field(
        3.0,
        ge=0,
        le=1000,
        description="gaps are judged against each battery's own sampling: an interval is a gap "
        "when longer than max(max_gap_s, gap_factor x typical interval), the typical interval "
        "being the lower median of the battery's last 16 intervals (the current one included; "
        "kept in its state, decided record by record). A 1/min source with jitter integrates "
        "fully, a 10 min hole in it is still a gap; 0 = max_gap_s alone",
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        le=86_400 * 366 * 100,
        description="records whose ts is further ahead of this machine's clock are "
        "dead letters (future), never the battery's frontier",
    )
    plausibility_checks: bool = Field(
        True,
        description="the plausibility layer ahead of the models "
        "(twin_stream/engine/plausibility.py): "
        "open sense wires, impossible and stuck readings raise sensor_fault and are kept "
        "out of SOC, imbalance, energy and voltage alerts",
    )
    max_message_bytes: int = Field(1 << 20, ge=1024, le=1 << 28)
    max_dead_letters_per_message: int = Field(
        10,
        ge=1,
        le=100_000,
        description="refused records of one message (a JSON array) past this become one "
        "summary dead letter that counts them",
    )
    max_buffered_per_battery: int = Field(100_000, ge=1)


class ModelsSettings(_Strict):
    enabled: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


MarkedField = Literal["cell_voltages", "temperatures", "voltage", "soc", "soh"]


def _default_markers() -> dict[MarkedField, list[float]]:
    return {"cell_voltages": [65.535], "temperatures": []}


class InputSettings(_Strict):
    field_map: dict[str, str] = Field(
        default_factory=dict, description="source field name -> logical name"
    )
    invalid_markers: dict[MarkedField, list[float]] = Field(
        default_factory=_default_markers,
        description="values a source sends for 'not available' (J1939: all ones, e.g. "
        "65.535 V for a 16-bit mV field; -40 or 215 degC for some temperature sensors): such "
        "a channel or optional field is removed from its record (counted as degraded), the "
        "rest of the record is used. Values outside the valid ranges are removed anyway.",
    )


class OcvTableSettings(_Strict):
    soc: list[float]
    voltage: list[float]


class LimitLevelSettings(_Strict):
    severity: Literal["info", "warning", "critical"]
    threshold: float


class LimitSetSettings(_Strict):
    unit: str = ""
    over: list[LimitLevelSettings] = []
    under: list[LimitLevelSettings] = []
    hysteresis: float = Field(0.0, ge=0)


class _BatterySpecSettings(_Strict):
    chemistry: str | None = None
    capacity_ah: float | None = Field(None, gt=0, le=1e6)
    cells_in_series: int | None = Field(None, ge=1, le=1024)
    nominal_voltage: float | None = Field(None, gt=0, le=5000)
    ocv_table: OcvTableSettings | None = None
    limits: dict[str, LimitSetSettings] | None = None
    current_sign: Literal[1, -1] | None = None


class BatteryOverrides(_BatterySpecSettings):
    models: dict[str, dict[str, Any]] | None = Field(
        None,
        description="per-battery model parameters over models.params, e.g. "
        '{"eq_cycles": {"initial_cycles": 812}}; checked against each model\'s manifest',
    )


class BatteryDefaults(_BatterySpecSettings):
    chemistry: str | None = "NMC"
    capacity_ah: float | None = Field(100.0, gt=0, le=1e6)
    current_sign: Literal[1, -1] | None = 1


class FleetSettings(_Strict):
    defaults: BatteryDefaults = Field(default_factory=BatteryDefaults)
    batteries: dict[str, BatteryOverrides] = Field(default_factory=dict)


class DashboardSettings(_Strict):
    bind: str = Field(
        "127.0.0.1",
        description="address the live dashboard (twin-stream dashboard) listens on; "
        "0.0.0.0 to serve other hosts (it has no authentication)",
    )
    port: int = Field(8050, ge=1, le=65535, description="the dashboard's HTTP port")
    max_batteries: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="batteries the dashboard's in-memory view keeps; beyond that the least "
        "recently seen are dropped (memory stays bounded: see /healthz memory_bytes)",
    )
    points_per_series: int = Field(
        240,
        ge=2,
        le=100_000,
        description="points kept per battery and estimate series for the battery page's "
        "charts (the newest; older points are dropped)",
    )


class Settings(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @model_validator(mode="after")
    def _check_specs(self) -> Settings:
        # Resolve every spec once so a bad chemistry or OCV table fails at load time.
        try:
            resolve_spec(self.fleet.defaults, None)
        except SettingsError as exc:
            raise ValueError(f"fleet.defaults.{exc}") from None
        for bid, ov in self.fleet.batteries.items():
            try:
                resolve_spec(self.fleet.defaults, ov)
            except SettingsError as exc:
                raise ValueError(f"fleet.batteries.{bid}: {exc}") from None
        return self

    def spec_for(self, battery_id: str) -> BatterySpec:
        return resolve_spec(self.fleet.defaults, self.fleet.batteries.get(battery_id))

    def current_sign_for(self, battery_id: str) -> int:
        ov = self.fleet.batteries.get(battery_id)
        if ov is not None and ov.current_sign is not None:
            return ov.current_sign
        return self.fleet.defaults.current_sign or 1


def resolve_spec(defaults: BatteryDefaults, override: BatteryOverrides | None) -> BatterySpec:
    merged = defaults.model_dump(exclude_none=False)
    if override is not None:
        merged.update(override.model_dump(exclude_none=True))
    try:
        base = get_chemistry(str(merged["chemistry"]))
    except ChemistryError as exc:
        raise SettingsError(f"chemistry: {exc}") from None
    ocv = base.ocv
    if merged.get("ocv_table"):
        try:
            ocv = OcvTable(tuple(merged["ocv_table"]["soc"]), tuple(merged["ocv_table"]["voltage"]))
        except ChemistryError as exc:
            raise SettingsError(f"ocv_table: {exc}") from None
    limits = dict(base.limits)
    for name, ls in (merged.get("limits") or {}).items():
        limits[name] = LimitSet.from_dict(ls)
    chem = Chemistry(
        name=base.name,
        ocv=ocv,
        nominal_cell_voltage=base.nominal_cell_voltage,
        charge_efficiency=base.charge_efficiency,
        discharge_efficiency=base.discharge_efficiency,
        limits=limits,
        description=base.description,
        hysteresis=base.hysteresis,
        relaxation=base.relaxation,
    )
    key = json.dumps({k: v for k, v in merged.items() if k != "current_sign"}, sort_keys=True)
    return BatterySpec(
        key=key,
        chemistry=chem,
        capacity_ah=float(merged["capacity_ah"]),
        cells_in_series=merged.get("cells_in_series"),
        nominal_voltage=merged.get("nominal_voltage"),
    )


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith("TWIN_TEST_"):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if path[0] not in Settings.model_fields:
            continue  # TWIN_ variables of other tools (e.g. TWIN_BROKER_HOME)
        value: Any = text
        if not _is_text(_annotation_at(path)):
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _annotation_at(path: list[str]) -> Any:
    """The annotation of the setting at `path` (lower-case keys from Settings down), through
    nested models and dict values; Any when the path leaves the models."""
    tp: Any = Settings
    for key in path:
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, types.UnionType):  # e.g. `OcvTableSettings | None`
            inner = [a for a in get_args(tp) if a is not type(None)]
            tp = _unwrap(inner[0]) if len(inner) == 1 else Any
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(key)
            if field is None:
                return Any
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1] if get_args(tp) else Any
        else:
            return Any
    return tp


def _is_text(tp: Any) -> bool:
    """True for str, SecretStr, a Literal of strings, and unions (Optional) of these."""
    tp = _unwrap(tp)
    if tp is str or tp is SecretStr:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return all(isinstance(a, str) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return bool(inner) and all(_is_text(a) for a in inner)
    return False


def _is_secret_loc(loc: tuple[int | str, ...]) -> bool:
    """Whether an error location names a secret: a SecretStr field, or a key that says so."""
    if any(isinstance(p, str) and any(w in p.lower() for w in _SECRET_WORDS) for p in loc):
        return True
    return _is_secret_type(_annotation_at([str(p) for p in loc]))


def _is_secret_type(tp: Any) -> bool:
    tp = _unwrap(tp)
    return tp is SecretStr or (
        get_origin(tp) in (Union, types.UnionType) and any(_is_secret_type(a) for a in get_args(tp))
    )


def _holds_secret(tp: Any) -> bool:
    """Whether a settings model (or Optional of one) has a secret field, at any depth."""
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return any(_holds_secret(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return any(
            _is_secret_type(f.annotation) or _holds_secret(f.annotation)
            for f in tp.model_fields.values()
        )
    return False


def _redact(value: Any) -> Any:
    """`value` with the values of secret-named keys replaced by "***", at any depth."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and any(w in k.lower() for w in _SECRET_WORDS)
            else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _format(exc: ValidationError, origin: str) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{origin}: {msg}"
    if err["type"] == "extra_forbidden":
        return f"{origin}: unknown key {loc}"
    got = err.get("input")
    if _is_secret_loc(err["loc"]) or (
        not isinstance(got, Mapping) and _holds_secret(_annotation_at([str(p) for p in err["loc"]]))
    ):
        got = MASK  # a secret, or a malformed section that holds one (e.g. a list)
    else:
        got = repr(_redact(got))
    return f"{origin}: {loc}: {msg} (got {got})"


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults <- file <- environment, validated; raises SettingsError naming the key."""
    data: dict[str, Any] = {}
    origin = "settings"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{p}: cannot read settings file: {exc.strerror}") from None
        except ValueError as exc:
            raise SettingsError(f"{p}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{p}: settings must be a JSON object")
    env = _env_overrides(os.environ if environ is None else environ)
    if env:
        data = _deep_merge(data, env)
        origin += " + TWIN_ environment"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_format(exc, origin)) from None
