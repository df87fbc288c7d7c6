"""Making a model: planning a run (plan), the trainer and its state, evaluation, resuming,
the recipes --minutes and --from follow, fine-tuning, the run directory and its lock, and
data parallelism across processes (parallel, launch)."""
