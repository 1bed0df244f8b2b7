"""LlamaGen (class-conditional GPT) backbone and its VQ tokenizer, official checkpoints in and out."""
