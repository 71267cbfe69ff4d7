"""imbalance_analysis: cell voltage spread (every record) with a levelled `cell_imbalance`
alert naming the culprit cell, and at an event-time cadence the spread, the relative spread and,
at rest, the SOC imbalance read through the chemistry's OCV curve with a confidence that follows
the curve's slope and the rest time; one compiled per-record loop over a block of batteries."""

from models.imbalance_analysis.model import ImbalanceAnalysis

__all__ = ["ImbalanceAnalysis"]
