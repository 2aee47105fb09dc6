"""The `isobench` command's entry point (`python -m bench.cli` too); the commands are in
bench/commands/."""

from bench.commands import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
