"""CLI subcommands: every module here defines ``register(subparsers)``; ``pmirs.cli`` finds them."""
