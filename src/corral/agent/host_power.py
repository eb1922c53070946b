"""Reboot or power off the machine the agent runs on (`corral host reboot|shutdown`).

The command is the machine's own (``systemctl reboot`` by default; `corral agent run
--reboot-command` names another, and the lab names its power-cycle of a lab host). It runs a
moment after the answer left, in a session of its own: the engine hears that the machine
goes down before it does. ``START_ID`` is new at each start of the agent: the engine knows a
rebooted host is back when it reads another one.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import uuid

START_ID = uuid.uuid4().hex
DELAY_S = 1.0  # time for the answer to reach the engine before the machine goes down

log = logging.getLogger("corral.agent")


def run_later(command: list[str]) -> None:
    def go() -> None:
        log.warning("host power: running %s", " ".join(command))
        try:
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("host power: %s failed: %s", command[0], exc)

    timer = threading.Timer(DELAY_S, go)
    timer.daemon = True
    timer.start()
