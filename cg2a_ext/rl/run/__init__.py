"""A run on disk and its machine: the run folder, checkpoints, logs, seeding, host memory and plots of runs."""
