"""Every metric musicrec reports, pure and numpy-only unless said: rating (RMSE, MAE), topn (the one DCG,
HR@k, NDCG@k, Recall@k, coverage, the one top_k), full (a scorer evaluated over every item), bounded (the
same numbers for inner-product scorers without full score rows; torch), protocol (the temporal leave-last-out
split), directions (whether bigger is better, per metric)."""
