"""Tasks: each module builds its model, encodes data, collates batches, computes loss and metrics."""
