"""Kill points for crash-resume tests: `SEE_TRAIN_KILL_AFTER=<label>` SIGKILLs the training process when the run
reaches the point with that label (no handler runs, as in an OOM kill or a lost node).

Labels: `cycle1.rl` (after that phase), `cycle1.rl.step1` (after the RL phase's checkpoint of step 1 is
complete), `cycle1.sft_data`, `labels.features`, `labels.sft.epoch1`, ... (one per phase the loops record).
Unset, a kill point does nothing."""

from __future__ import annotations

import logging
import os
import signal

KILL_AFTER_ENV = "SEE_TRAIN_KILL_AFTER"
log = logging.getLogger(__name__)


def kill_point(label: str) -> None:
    if os.environ.get(KILL_AFTER_ENV) == label:
        log.warning("%s=%s: killing this run now (test hook)", KILL_AFTER_ENV, label)
        os.kill(os.getpid(), signal.SIGKILL)
