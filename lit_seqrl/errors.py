"""Errors that mean "the input is wrong", not "the code is wrong".

The command line prints these as one line (``lit-seqrl fit: error: ...``); every other exception
keeps its traceback, so a bug never hides behind a friendly message. This module imports nothing
from lit_seqrl, so any layer may raise them. ``backbones/`` and ``ops/`` do not: they are
standalone layers (a plugin's backbone does not know these types either) and report bad
arguments with plain ``ValueError``.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value, command-line argument, dataset or file given by the user is invalid.

    A ``ValueError``, so ``except ValueError`` written before this type existed still catches it.
    """


class MissingInputError(ConfigError, FileNotFoundError):
    """A file, directory, dataset or checkpoint the user named does not exist."""


class ConfigTypeError(ConfigError, TypeError):
    """A value of the wrong kind: options a class does not take, an environment an agent cannot act in."""
