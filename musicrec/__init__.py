"""musicrec: rating models for Amazon Digital Music, from raw reviews to a published ONNX champion.

The library is pure Python and never imports Prefect; flows/ and tasks/ orchestrate it.
"""

__version__ = "0.1.0"
