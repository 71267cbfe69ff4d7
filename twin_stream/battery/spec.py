"""A battery's resolved spec: chemistry (with any per-battery OCV table or limit overrides),
nominal capacity, cells in series and nominal voltage. Settings build it; models read it."""

from __future__ import annotations

from dataclasses import dataclass

from twin_stream.battery.chemistry import Chemistry, LimitSet


@dataclass(frozen=True, eq=False)
class BatterySpec:
    key: str  # canonical JSON of what defines the spec: equal keys, interchangeable specs
    chemistry: Chemistry
    capacity_ah: float
    cells_in_series: int | None
    nominal_voltage: float | None  # pack V; None: cells x the chemistry's nominal cell voltage

    @property
    def limits(self) -> dict[str, LimitSet]:
        return self.chemistry.limits

    def pack_nominal_voltage(self, n_cells: int | None = None) -> float:
        if self.nominal_voltage is not None:
            return self.nominal_voltage
        cells = self.cells_in_series or n_cells or 1
        return cells * self.chemistry.nominal_cell_voltage
