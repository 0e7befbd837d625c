"""``tokendist``: the command line, on top of every component (each subcommand imports
what it runs lazily, so ``tokendist stack up`` never loads web3)."""

from tokendist.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
