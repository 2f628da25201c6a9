"""One training run, read top to bottom (run.py), with its checkpointing, console, epoch log, interrupts, host
settings and run lock. The sweep's in-trial agent (pruning, trial attributes) is ``sweeping/pruning.py``."""
