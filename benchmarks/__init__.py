"""asv benchmarks of anynet (``asv run --python=same --quick``)."""
