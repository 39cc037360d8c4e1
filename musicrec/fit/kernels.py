"""numba helpers that the families' compiled training kernels share (musicrec.rating.fused,
musicrec.implicit.fused): the fast-math flags and a cache prefetch of table rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FASTMATH = {"reassoc", "contract"}  # vectorised dot products and FMAs; no assumptions about inf / nan
AHEAD = 16  # rows ahead whose table rows are prefetched: the tables (~150 MB at seed size) miss every cache


@intrinsic
def prefetch(typingctx: Any, array: Any, row: Any, col: Any) -> Any:
    """llvm.prefetch of array[row] (1-D) or array[row, col] (2-D): a hint, never a fault, no effect on results.
    The kernels are bound by cache misses on random table rows; asking for them AHEAD rows early overlaps the
    misses (about 3x on a plain row gather here)."""
    if not isinstance(array, types.Array) or array.ndim not in (1, 2):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:], strict=False)][
            : aryty.ndim
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(
            fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)]
        )  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(array, row, col), codegen


@njit(nogil=True, cache=True)
def prefetch_row(table: np.ndarray, row: int) -> None:
    """Every cache line of one table row (32 float32 factors: two lines)."""
    for col in range(0, table.shape[1], 16):
        prefetch(table, row, col)
