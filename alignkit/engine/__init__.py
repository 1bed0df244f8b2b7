"""The training engine: plan (data order), backends (devices, optimiser), trainer (loop, checkpoints)."""
