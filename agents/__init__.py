"""The Faust shell around the engine: topics, the battery-state table, the ingest agent and
the stale timer. No science and no ordering rules here: those live in `twin_stream.engine`
and `models/`, so live and replay run the same code."""

from agents.app import TwinApp, build_app

__all__ = ["TwinApp", "build_app"]
