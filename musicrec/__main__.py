"""`python -m musicrec` runs the CLI."""

from musicrec.cli import run

run()
