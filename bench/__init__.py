"""Benchmarks for qewd-twisted (issue 6): load generator, floor servers, scenario runner.

Run everything with ``bash bench/run.sh`` (docs/performance.md says what is measured and how).
"""
