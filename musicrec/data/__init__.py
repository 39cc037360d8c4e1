"""Data: readers for the Amazon formats, the canonical tables, the generator, the split."""
