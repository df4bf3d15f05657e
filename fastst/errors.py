"""Every error a user can act on, and the one way a command reports it.

Each class below is a :class:`UserError`: its message is the whole story (it names the file, key or
flag and what to do), so every ``fastst`` command prints it as one line, ``error: <message>``, and
exits with status 2. ``FASTST_DEBUG=1`` re-raises it with the full traceback instead. Each class also
keeps the builtin base it always had (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
``except ValueError`` in a user's code still catches what it caught before.

This module imports nothing from fastst or any third-party library: every layer may import it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_USER_ERROR = 2  # a UserError: one ``error:`` line on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C: the conventional 128 + SIGINT
DEBUG_ENV = "FASTST_DEBUG"


class UserError(Exception):
    """An error whose one-line message tells the user what to fix; printed without a traceback."""


# -- configuration and command lines -------------------------------------------------------------
class ConfigError(UserError, ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


class UsageError(UserError, ValueError):
    """A bad command line (a flag, a missing input, an output that would be overwritten)."""


# -- inputs: files, images, data, downloads ------------------------------------------------------
class ImageError(UserError, ValueError):
    """An image file that cannot be used; the message names the file and why."""


class VideoError(UserError, ValueError):
    """A video that cannot be read or written; the message names the file and why."""


class DataError(UserError, ValueError):
    """The training photos cannot be used (missing or empty folder, unusable data set)."""


class CacheError(DataError):
    """A data cache that cannot be built or read."""


class DownloadError(UserError, RuntimeError):
    """A download failed; the message names the URL and what to do (retry, or copy the file by hand)."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum; nothing of it is kept."""


class StyleImageError(UserError, FileNotFoundError):
    """The style image is missing or unusable; the message says where we looked and what to do."""


class UnknownStyleError(UserError, ValueError):
    """A style name that is neither shipped (training) nor one of the model's styles (inference);
    the message lists the known names."""


class WeightsError(UserError, RuntimeError):
    """The loss network's weights cannot be loaded (offline, damaged file, wrong keys)."""


# -- training -------------------------------------------------------------------------------------
class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or inf; the message names the step and the loss term."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be written or resumed from (full disk, unwritable folder, damaged file)."""


class TrainingOutOfMemoryError(UserError, RuntimeError):
    """The accelerator ran out of memory; the message says which settings to lower."""


# -- model files and inference --------------------------------------------------------------------
class ModelFileError(UserError, ValueError):
    """A checkpoint or model file that cannot be used; the one-line message names the file and what to do."""


def newer_format(path: object, version: int, supported: int) -> ModelFileError:
    """The error for a model file (``.safetensors`` or ``.onnx``) whose metadata format is newer than this fastst's."""
    import fastst

    return ModelFileError(
        f"{path}: written by a newer fastst (format {version} > {supported}); upgrade fastst "
        f"(this is fastst {fastst.__version__})"
    )


class InferenceError(UserError, ValueError):
    """A bad inference option or device; the message names it and what is allowed."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its class name when empty), optionally cut to ``limit`` chars."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:limit] if limit else line


def check_known_keys(cls: type, data: object, what: str) -> None:
    """Refuse keys of ``data`` that are not fields of the dataclass ``cls``, naming them and the known ones."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)  # type: ignore[call-overload]
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")


def report(e: BaseException) -> int:
    """Print ``e`` as the one ``error:`` line and return the exit status (2); used by every command."""
    message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_command(
    func: Callable[..., Any],
    *args: Any,
    interrupted: str | None = None,
    on_error: Callable[[str], None] | None = None,
) -> int:
    """Call ``func(*args)`` as a command: its int result (or 0) is the exit status.

    A :class:`UserError` becomes one ``error:`` line and status 2 (``FASTST_DEBUG=1``: the traceback);
    ``on_error`` also gets the message (``fastst train`` writes it into the run's log file).
    Ctrl-C becomes ``error: interrupted`` (plus ``interrupted``, what a re-run does) and status 130.
    """
    try:
        result = func(*args)
    except UserError as e:
        if os.environ.get(DEBUG_ENV):
            raise
        if on_error is not None:
            on_error(str(e))
        return report(e)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: interrupted{'; ' + interrupted if interrupted else ''}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def command(interrupted: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., int]]:
    """Decorate a command's ``main(argv) -> int`` with the one error path of :func:`run_command`.

    ``fastst <command>`` and a direct call ``main([...])`` then behave the same: a user error is one
    ``error:`` line and the return value 2, never a traceback.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., int]:
        @functools.wraps(func)
        def wrapper(*args: Any) -> int:
            return run_command(func, *args, interrupted=interrupted)

        return wrapper

    return decorate
