"""What every model family shares: the epoch loop with early stopping, row-wise AdaGrad, compiled-kernel
helpers, the best-epoch checkpoint and the process's thread limits."""
