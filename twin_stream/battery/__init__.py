"""Battery facts as data: chemistries (OCV tables, limits, efficiencies) and a battery's
resolved spec. The lowest layer: imports nothing of twin_stream."""
