"""asv benchmarks of anynet (``asv run --python=same --quick``)."""

from anynet.cli import prepare_process

prepare_process()  # the process a benchmark runs in is set up as the anynet command's, before NumPy loads
