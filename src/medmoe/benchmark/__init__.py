"""The benchmark harness behind ``benchmarks/run.py``: the paper's Tables 1–3 with our baselines.

:func:`run_benchmark` plans every method × seed (× task for single-task baselines), trains and
evaluates what is not finished yet, and after every run rewrites ``results.json``, ``table1.md``,
``table2.md``, ``table3.md`` and the figures in the output folder, so an interrupted benchmark
leaves correct partial results and continues where it stopped.
"""

from medmoe.benchmark.plan import METHODS, PROFILES, Method, Profile, RunSpec, Subsample, plan_runs
from medmoe.benchmark.report import run_benchmark, write_outputs
from medmoe.benchmark.runner import BenchmarkContext

__all__ = ["METHODS", "PROFILES", "BenchmarkContext", "Method", "Profile", "RunSpec", "Subsample", "plan_runs",
           "run_benchmark", "write_outputs"]
