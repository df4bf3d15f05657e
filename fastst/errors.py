"""Errors a user can act on; entry points print them as one line (no traceback)."""

from __future__ import annotations


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its class name when empty), optionally cut to ``limit`` chars."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:limit] if limit else line


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


def check_known_keys(cls: type, data: object, what: str) -> None:
    """Refuse keys of ``data`` that are not fields of the dataclass ``cls``, naming them and the known ones."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)  # type: ignore[call-overload]
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
