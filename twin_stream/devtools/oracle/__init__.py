"""External oracle for the twin's estimates: PyBaMM simulations of series strings of cells.

Optional: needs the ``oracle`` extra (``pip install -e '.[oracle]'``: pybamm, matplotlib).
`fixture` simulates and caches fixtures (telemetry + truth), `duty` builds the current
profiles, `evaluate` replays them through the twin and compares with the truth against the
bounds of issue 4. Used by ``tests/oracle`` (small, CI) and ``bench/accuracy`` (full report).
"""
