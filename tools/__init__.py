"""Tools around the algorithm, run from the repository root: `python -m tools.bench` (make bench) measures a
step and the rollout, `python -m tools.plot RUN_DIR` draws a run's metrics."""
