"""`training.judge_tally`: a phase's judge counters add up over the runs of it and over its ranks."""

from __future__ import annotations

import json
from types import SimpleNamespace

from selfeval.judge import JudgeCounters
from training.judge_tally import JudgeTally, phase_totals


def client(**counts: int) -> SimpleNamespace:
    return SimpleNamespace(counters=JudgeCounters(**counts))


def test_a_run_counts_only_the_calls_made_since_it_started(tmp_path):
    judge = client(requests=7, judged=5)  # calls of earlier phases in this process
    tally = JudgeTally(judge, tmp_path / "cycle_1" / "rl", rank=0)  # the phase's folder is made if need be
    judge.counters.requests += 3
    judge.counters.judged += 2
    judge.counters.cache_hits += 1
    assert tally.counts() == JudgeCounters(requests=3, judged=2, cache_hits=1).as_dict()


def test_a_rerun_of_the_phase_adds_to_what_the_killed_run_saved(tmp_path):
    first = client()
    killed = JudgeTally(first, tmp_path, rank=0)
    first.counters.requests += 4
    first.counters.judged += 4
    killed.save()
    first.counters.requests += 1  # sent after the last save: the one call a kill can take with it

    second = client(requests=100)  # a fresh process whose judge client counts from its own start
    rerun = JudgeTally(second, tmp_path, rank=0)
    second.counters.requests += 2
    second.counters.cache_hits += 4
    rerun.save()
    assert rerun.counts() == JudgeCounters(requests=6, judged=4, cache_hits=4).as_dict()
    assert json.loads((tmp_path / "judge_counters.rank0.json").read_text()) == rerun.counts()


def test_the_phase_total_sums_every_rank_that_ever_ran_it(tmp_path):
    for rank, requests in ((0, 3), (1, 5), (2, 1)):  # rank 2 ran before a restart with two processes
        judge = client()
        tally = JudgeTally(judge, tmp_path, rank)
        judge.counters.requests += requests
        tally.save()
    assert phase_totals(tmp_path)["requests"] == 9
    assert phase_totals(tmp_path / "never-ran") == {}
