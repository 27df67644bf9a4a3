"""The command line (a contract: scripts and tests rely on it; see docs/design.md).

Exit codes: 0 all good, 1 a problem was found, 2 bad usage or configuration. Errors
are one line on stderr; tracebacks only with ``--log-level debug``. ``--json`` prints
one JSON document on stdout. One module per command group; ``app`` registers them.
"""

from bwc_dock.cli.app import cli, main

__all__ = ["cli", "main"]
