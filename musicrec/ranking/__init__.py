"""Top-N evaluation: the temporal leave-last-out protocol and full-ranking metrics (numpy, no torch)."""
