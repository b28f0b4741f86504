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


def _ensure_handler():
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def info(message, verbose=1):
    """Logs ``message`` at INFO level when ``verbose`` is truthy."""
    if verbose:
        _ensure_handler()
        logger.info(message)
