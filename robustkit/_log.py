"""robustkit's output channel: one ``logging`` logger, used only when the caller asks.

Library code never calls ``print``. Progress over many batches is a ``keras.utils.Progbar``;
one-line messages (a finished stage, a summary) go through :func:`info`, which is silent
unless ``verbose`` is set. A program that configures ``logging`` itself gets the messages
through its own handlers; otherwise robustkit installs one stdout handler on first use.

Example:

>>> from robustkit import _log
>>> _log.info("not shown", verbose=0)
>>> _log.logger.name
'robustkit'
"""

import logging
import sys

logger = logging.getLogger("robustkit")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (so redirections capture it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property wins
        pass


def _ensure_handler():
    # verbose output was asked for: pass INFO unless the program set a level itself
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def info(message, verbose=1):
    """Logs ``message`` at INFO level when ``verbose`` is truthy."""
    if verbose:
        _ensure_handler()
        logger.info(message)
