"""Handler modules the benchmarks load into our nodes (through moduleMap, by dotted name)."""
