"""Exporting the retrieval champion: its user tower as ONNX (export.py). Loading it without torch and the
inner-product index over its item table are scoring's (musicrec.scoring.runtime, musicrec.scoring.index)."""
