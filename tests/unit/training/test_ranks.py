"""`training.ranks` in one process (the multi-process path runs in tests/integration/test_training_multiprocess.py)."""

from __future__ import annotations

from training.ranks import Ranks, join_ranks, launched_rank


def test_a_lone_process_is_main_and_its_barrier_returns(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    ranks = join_ranks(on_gpu=False)
    assert ranks == Ranks(0, 1) and ranks.is_main and launched_rank() == 0
    ranks.barrier()


def test_launched_rank_reads_the_launchers_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    assert launched_rank() == 3
    assert not Ranks(3, 4).is_main
