"""One-line messages of the inference layer: its one error (:class:`InferenceError`, a ``ValueError`` whose message
is one line for the user), an exception's one-line summary (:func:`first_line`) and :func:`quiet`, which keeps
library noise (exporter logs, warnings, progress output) out of those lines."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings


class InferenceError(ValueError):
    """A model, a file or an input that cannot be used; ``str()`` is one line naming it."""


def first_line(e: BaseException) -> str:
    """The exception's summary, plus the model code line that raised it when the message names one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("#")]
    # torch.export wraps the real error as "<class 'pkg.ErrorName'>: message" inside its own message.
    inner = next((ln for ln in lines if ln.startswith("<class")), None)
    if inner:
        cause = re.sub(r"^<class '(?:\w+\.)*(\w+)'>", r"\1", inner)
    else:
        cause = f"{type(e).__name__}: {lines[0] if lines else ''}"
    cause = cause.split("(unhinted", 1)[0].strip()[:240]
    where = [lines[i + 1] for i, ln in enumerate(lines[:-1])
             if ln.startswith("File ") and "/site-packages/" not in ln and not lines[i + 1].startswith("File ")]
    return f"{cause} at {where[-1]}" if where else cause


@contextlib.contextmanager
def quiet(loggers: tuple[str, ...] = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx"), *,
          level: int = logging.CRITICAL, output: bool = True, warning_patterns: tuple[str, ...] | None = None):
    """Keeps noise out of a command's own lines: log lines of ``loggers`` below ``level``, warnings (every one, or
    those whose message matches one of ``warning_patterns``) and, with ``output``, progress output on
    stdout/stderr."""
    found = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(level)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            if warning_patterns is None:
                warnings.simplefilter("ignore")
            for pattern in warning_patterns or ():
                warnings.filterwarnings("ignore", message=pattern)
            if output:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        for lg, level_was in zip(found, levels, strict=True):
            lg.setLevel(level_was)
