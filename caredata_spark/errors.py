"""Errors a user or operator can act on; the CLI prints them as one line with an exit code.

Messages name files, tables, fields and reasons, never record contents or key material.
"""

from __future__ import annotations


class CaredataError(Exception):
    """Base of every expected failure; `exit_code` is what a scheduler sees."""

    exit_code = 1


class UsageError(CaredataError):
    """Bad command-line options or configuration."""

    exit_code = 2


class InputRefused(CaredataError):
    """An input file or request was refused (wrong key, tampered, expired agreement...)."""

    exit_code = 3
