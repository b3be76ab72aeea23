"""Benchmarks of the suite's data pipeline and training step against a re-creation of the thesis pipeline."""
