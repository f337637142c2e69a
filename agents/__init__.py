"""Faust agents: one per stage, thin loops over batches that call the pure code in graph/."""
