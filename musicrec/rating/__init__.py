"""Model families, one file each, and the registry that names them (musicrec.rating.build).

This package file imports nothing, so `musicrec.rating.configs` loads without torch (the CLI checks
overrides with it before anything slow starts)."""
