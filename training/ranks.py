"""The processes of one training run (`accelerate launch` / `torchrun`, or a single process) and their barriers.

Both trainers (GRPO, masked SFT) run on every rank. Everything else that touches the run directory belongs to
the main rank alone: the saved config, the window, the manifests, the SFT rows and the judge calls that build
them, model cards, deleting and moving checkpoints. The other ranks wait at a barrier and then read what main
wrote, so the manifests stay the one record of the run. In a single process every call here is a no-op.

On CPU the group is torch's gloo backend (`torchrun --nproc_per_node N -m seecli.main train ...`); that is how
the multi-process path is tested on machines without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# A barrier can wait for main's judge relabelling or a checkpoint copy: far longer than torch's default.
BARRIER_TIMEOUT = timedelta(hours=4)


def launched_rank() -> int:
    """This process's rank as the launcher set it, readable before any process group exists (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Ranks:
    index: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def barrier(self) -> None:
        if self.count > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


def join_ranks(on_gpu: bool) -> Ranks:
    """Join the launcher's process group (gloo on CPU, NCCL on GPU); a lone process gets `Ranks()`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    from accelerate import PartialState

    state = PartialState(cpu=not on_gpu, timeout=BARRIER_TIMEOUT)
    return Ranks(state.process_index, state.num_processes)
