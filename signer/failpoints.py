"""Named crash points for crash tests: the process kills itself (SIGKILL) at the armed one.

Off unless ``WITNESS_SIGNER_FAILPOINT`` names a point (read through
:meth:`signer.config.SignerConfig.env_value`, handed down by :mod:`signer.app`).
SIGKILL, not an exception: nothing runs after it — no ``finally``, no atexit, no
flush — which is what a power cut or an OOM kill does to the signer (T7). The
whole process group is killed, so that nothing the signer started (a helper process
of a future server arrangement included) outlives the crash.
"""

from __future__ import annotations

import logging
import os
import signal

from shared.errors import ConfigError

log = logging.getLogger(__name__)

ENV_NAME = "WITNESS_SIGNER_FAILPOINT"
# In the order a switch passes them.
POINTS = ("request_stored", "decided", "approved", "signed", "intent_logged",
          "broadcast_sent", "broadcast_recorded", "confirmation_seen")


class Failpoints:
    """Which point, if any, kills the process."""

    def __init__(self, armed: str | None = None) -> None:
        """Arm ``armed`` (None or empty: off).

        Raises:
            ConfigError: ``armed`` is not one of :data:`POINTS`.
        """
        if armed and armed not in POINTS:
            raise ConfigError(f"unknown fail point {armed!r}; one of {', '.join(POINTS)}",
                              field=ENV_NAME)
        self.armed = armed or None
        if self.armed:
            log.warning("fail point %s is armed: the signer will kill itself there", armed)

    def hit(self, point: str) -> None:
        """SIGKILL this process group if ``point`` is the armed one; else nothing."""
        if point == self.armed:
            log.critical("fail point %s reached: killing the signer", point)
            os.killpg(os.getpgid(0), signal.SIGKILL)
