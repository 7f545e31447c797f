"""The lag monitor, its windowed status and the Prometheus metrics of every process."""
