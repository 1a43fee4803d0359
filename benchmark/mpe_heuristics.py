"""Old import path of benchmark.studies.mpe_heuristics, kept only while tests/test_mpe.py imports from here; delete it
once that test imports `from benchmark.studies.mpe_heuristics import play`. Run the study as
`python -m benchmark.studies.mpe_heuristics`."""

from benchmark.studies.mpe_heuristics import play  # noqa: F401
