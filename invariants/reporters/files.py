"""Writing reports to files whole or not at all, and turning values into JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invariants.errors import UsageError

if TYPE_CHECKING:
    from invariants.config import Config

__all__ = ["emit", "jsonable", "write_atomic"]


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    except OSError as exc:
        raise UsageError(f"cannot write --output {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit(config: Config, text: str) -> None:
    """Deliver a finished report: to ``--output`` whole, or to standard output."""
    output = config.getoption("output")
    if output:
        write_atomic(output, text)
    else:
        config.stdout.write(text)
        config.stdout.flush()


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail before the run, not after it, when the output file cannot be written."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write --output {path}: folder {folder} does not exist")
    if target.is_dir():
        raise UsageError(f"cannot write --output {path}: it is a folder")


def jsonable(value: Any) -> Any:
    """A sample value in a form JSON can carry without losing its meaning."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)
