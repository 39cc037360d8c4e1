"""Batch scoring with the published champion, torch-free: bundle (download, verify, load), runtime (ONNX
sessions), sources and candidates, index (faiss), retrieve, rank, jobs, output (atomic), summary."""
