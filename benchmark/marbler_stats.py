"""Old import path of benchmark.studies.marbler_stats, kept only while tests/test_marbler.py imports from here; delete
it once that test imports `from benchmark.studies.marbler_stats import ...`. Run the study as
`python -m benchmark.studies.marbler_stats`."""

from benchmark.studies.marbler_stats import REFERENCE, random_episodes  # noqa: F401
