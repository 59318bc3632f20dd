"""Exceptions that :mod:`calbench.cli` maps to exit codes: 2 for usage/input errors, 1 for
runtime ones."""


class UsageError(Exception):
    """Bad input from the user: unknown task/model/backend, bad flag, unreadable results (exit 2)."""


class RuntimeFailure(Exception):
    """Something failed while running: a server that stays down, a crashed backend (exit 1)."""
