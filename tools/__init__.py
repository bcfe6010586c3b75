"""Tools around the algorithm, run from the repository root: `python -m tools.bench` (make bench) measures a
step and the rollout, `python -m tools.learn_check` (make learn-check) checks that the packaged model learns,
`python -m tools.plot RUN_DIR` draws a run's metrics."""
