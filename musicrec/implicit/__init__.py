"""Implicit-feedback models: dot-product embeddings trained on interactions with sampled negatives."""
