"""Training machinery shared by every task: callbacks, checkpoint I/O, loggers, metrics, plots, averaging."""
