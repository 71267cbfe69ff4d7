"""voltage_monitor: levelled per-cell over/under-voltage and per-sensor temperature alerts
(warning/critical from the chemistry's limits) with event-time debounce and hysteresis, a
charge-temperature window alert while charging, and min/max cell voltage estimates."""

from models.voltage_monitor.model import VoltageMonitor

__all__ = ["VoltageMonitor"]
