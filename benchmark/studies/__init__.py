"""One-off measurements that the docs quote (reference returns, MARBLER statistics, solver, checkpoint and step costs,
consensus error), each run from the repository root as `python -m benchmark.studies.<name>`; not part of the results
pipeline (benchmark.sweep, benchmark.records, benchmark.report), which never imports them."""
