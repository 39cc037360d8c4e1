"""Serving the retrieval champion: its user tower as ONNX (export.py), loading it and the item table without
torch (runtime.py), and the inner-product index over the item table (index.py)."""
