"""The results pipeline and the tools around it, run from the repository root as modules, e.g.

    python -m benchmark.sweep --help

The pipeline: sweep (runs a grid), records (a result record per finished run), report (Table 1, curves, verdicts),
evaluate (plays a saved model), with fewseeds (the statistics) and checks (the tools' shared flag rules). mutants tests
the test suite. benchmark.studies holds the one-off measurements the docs quote (python -m benchmark.studies.<name>).
"""
