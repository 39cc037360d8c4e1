"""The training pipeline's stages as plain functions over paths: each reads its inputs from the run's
workspace, writes its outputs there, and returns a small JSON-able record. Flows call them via tasks."""
