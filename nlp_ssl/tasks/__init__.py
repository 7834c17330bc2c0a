"""One module per task: its data preparation, loss module, batch builder and metrics."""
