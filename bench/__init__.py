"""Benchmarks: run from the repository root as `python -m bench.<name>`; results land in bench/results/."""
