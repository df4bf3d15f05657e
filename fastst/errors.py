"""Errors a user can act on; entry points print them as one line (no traceback)."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""
