"""VAR (next-scale prediction) backbone and its multi-scale VQVAE, official checkpoints in and out."""
