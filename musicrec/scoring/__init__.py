"""Batch scoring with the published champion: onnxruntime only (no torch), verified bundles, atomic outputs."""
