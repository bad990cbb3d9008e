"""One evaluation run: prompt set -> answers with self-evaluations -> judge -> metrics -> report, resumable.

The run directory holds everything needed to resume or re-judge without asking the model or the judge twice:
`spec.json` (what was asked; reopening with different answers-defining settings is refused), `items.jsonl`
(the prompt set as evaluated), `answers.jsonl` (journal, one fsynced line per answered item), `judge_cache.jsonl`
(the judge client's cache), then `examples.jsonl`, `metrics.json`, `report.md` and `plots/`, rewritten at the end.
A kill loses at most the requests in flight. `answers_from` re-judges another run's answers (cross-judge).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from evaluation.answers import AnswerSettings, SidecarAnswerer, is_url, local_sidecar
from evaluation.metrics import Bootstrap, Example, compare_to_baseline, compute_metrics, pairwise_win_rate
from evaluation.prompt_sets import EvalItem, load_prompt_set
from selfeval.journal import append_record, read_records
from selfeval.judge import JudgeClient, JudgeError, JudgeSettings
from selfeval.rubric import ATTRIBUTES
from training.progress import NullProgress, Progress

log = logging.getLogger(__name__)

SPEC, ITEMS, ANSWERS, EXAMPLES, METRICS = "spec.json", "items.jsonl", "answers.jsonl", "examples.jsonl", "metrics.json"
JUDGE_CACHE = "judge_cache.jsonl"


class EvalError(RuntimeError):
    """An evaluation that cannot go on; what is journaled stays, so the same command resumes."""


@dataclass(frozen=True)
class EvalSpec:
    prompts: str
    judge: JudgeSettings
    model: str | None = None  # checkpoint DIR or sidecar URL
    answers_from: str | None = None  # another run directory: re-judge its answers
    label: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    answers: AnswerSettings = field(default_factory=AnswerSettings)
    baseline: str | None = None
    pairwise: bool = True
    bootstrap: int = 1000
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.answers_from is None):
            raise ValueError("give exactly one of --model (DIR or URL) and --answers-from (a run directory)")
        if self.bootstrap < 1:
            raise ValueError("bootstrap resamples must be >= 1")

    def identity(self) -> dict:
        """What the answers and judgements depend on: a resumed run must agree on all of it."""
        answers = asdict(self.answers)
        for volatile in ("concurrency", "timeout_s", "api_key_env"):
            answers.pop(volatile)
        return {
            "prompts": self.prompts,
            "limit": self.limit,
            "model": self.model,
            "answers_from": self.answers_from,
            "answers": answers,
            "judge": {"base_url": self.judge.base_url, "model": self.judge.model},
        }


def _shown(model: str | None) -> str | None:
    """A model path as reports show it: the home directory as `~`, so reports carry no user's absolute path."""
    home = str(Path.home())
    return "~" + model[len(home) :] if model and model.startswith(home + "/") else model


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def open_run(spec: EvalSpec, out: Path) -> list[EvalItem]:
    """Create or reopen the run directory; returns the items (fixed at creation)."""
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / SPEC
    if spec_path.exists():
        saved = json.loads(spec_path.read_text(encoding="utf-8"))
        if saved.get("identity") != spec.identity():
            raise EvalError(
                f"{out} holds a run with other settings ({json.dumps(saved.get('identity'))}); "
                "use another --out, or the same settings to resume it"
            )
    else:
        _write_json(spec_path, {"identity": spec.identity(), "label": spec.label})
    items_path = out / ITEMS
    if items_path.exists():
        return [EvalItem.from_dict(r) for r in read_records(items_path)]
    if spec.answers_from:
        source = Path(spec.answers_from) / ITEMS
        if not source.exists():
            raise EvalError(f"{spec.answers_from} is not an evaluation run (no {ITEMS})")
        items = [EvalItem.from_dict(r) for r in read_records(source)]
    else:
        data_dir = Path(spec.data_dir) if spec.data_dir else None
        items = load_prompt_set(spec.prompts, data_dir, spec.limit).items
    _write_jsonl(items_path, [i.to_dict() for i in items])
    return items


def collect_answers(spec: EvalSpec, out: Path, items: list[EvalItem], progress: Progress) -> dict[str, dict]:
    """Answer every item not yet in the journal; returns id -> record."""
    journal = out / ANSWERS
    if spec.answers_from:
        done = {r["id"]: r for r in read_records(Path(spec.answers_from) / ANSWERS)}
        missing = [i.id for i in items if i.id not in done]
        if missing:
            raise EvalError(f"{spec.answers_from} has no answer for {len(missing)} item(s), e.g. {missing[:3]}")
        return done
    done = {r["id"]: r for r in read_records(journal)}
    todo = [i for i in items if i.id not in done]
    if todo:
        log.info("answering %d of %d items (%d journaled)", len(todo), len(items), len(done))
        if is_url(spec.model):
            asyncio.run(_answer_all(spec.model, spec.answers, todo, journal, progress))
        else:
            with local_sidecar(Path(spec.model), out / "sidecar.log", spec.max_model_len) as url:
                asyncio.run(_answer_all(url, spec.answers, todo, journal, progress))
        done = {r["id"]: r for r in read_records(journal)}
    return done


async def _answer_all(url: str, settings: AnswerSettings, items: list[EvalItem], journal: Path, progress) -> None:
    answerer = SidecarAnswerer(url, settings)
    slot = asyncio.Semaphore(settings.concurrency)
    progress.start("answers", "answers + self-evaluations", len(items))

    async def one(item: EvalItem) -> None:
        async with slot:
            record = await answerer.answer(item)
        append_record(journal, record)
        progress.advance("answers")

    try:
        await asyncio.gather(*(one(item) for item in items))
    finally:
        progress.finish("answers")
        await answerer.aclose()


def judge_answers(
    items: list[EvalItem], answers: dict[str, dict], judge: JudgeClient, progress: Progress
) -> dict[str, dict[str, int]]:
    """Judge scores for every answered item (cached calls cost nothing); raises EvalError if any failed."""
    todo = [i for i in items if i.id in answers and "skipped" not in answers[i.id]]

    async def run() -> list:
        progress.start("judge", "judge calls", len(todo))

        async def one(item: EvalItem):
            try:
                return (await judge.judge(item.conversation, answers[item.id]["answer"], item.references)).scores
            finally:
                progress.advance("judge")

        try:
            return await asyncio.gather(*(one(i) for i in todo), return_exceptions=True)
        finally:
            progress.finish("judge")
            await judge.aclose()

    results = asyncio.run(run())
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for failure in failures:
            if not isinstance(failure, JudgeError):
                raise failure
        raise EvalError(
            f"{len(failures)} of {len(todo)} judge calls failed (first: {failures[0]}); the others are cached, "
            "run the same command again to finish"
        )
    return {item.id: scores for item, scores in zip(todo, results, strict=True)}


def build_examples(items: list[EvalItem], answers: dict[str, dict], judged: dict[str, dict[str, int]]) -> list[dict]:
    rows = []
    for item in items:
        if item.id not in judged:
            continue
        answer = answers[item.id]
        rows.append(
            {
                "id": item.id,
                "category": item.category,
                "answer": answer["answer"],
                "finish_reason": answer.get("finish_reason"),
                "source": answer["source"],
                "self_scores": answer["scores"],
                "judge_scores": judged[item.id],
            }
        )
    return rows


def to_example(row: dict) -> Example:
    scores = row["self_scores"]
    return Example(
        id=row["id"],
        probs=[scores[a]["probs"] for a in ATTRIBUTES],
        label_mass=[scores[a]["label_mass"] for a in ATTRIBUTES],
        judge=[row["judge_scores"][a] for a in ATTRIBUTES],
        valid_block=row["source"] == "generated",
    )


def load_examples(run_dir: Path) -> list[dict]:
    path = run_dir / EXAMPLES
    if not path.exists():
        raise EvalError(f"{run_dir} has no {EXAMPLES}: finish that evaluation first")
    return read_records(path)


def pairwise_verdicts(
    items: list[EvalItem], ours: dict[str, dict], theirs: dict[str, dict], judge: JudgeClient, progress: Progress
) -> list[tuple[str, str]]:
    """(verdict with ours as A, verdict with ours as B) for every prompt both runs answered."""
    by_id = {i.id: i for i in items}
    shared = [i for i in ours if i in theirs and i in by_id]

    async def run() -> list:
        progress.start("pairwise", "pairwise judge calls", 2 * len(shared))

        async def one(item_id: str) -> tuple[str, str]:
            conversation, a, b = by_id[item_id].conversation, ours[item_id]["answer"], theirs[item_id]["answer"]
            first = await judge.compare(conversation, a, b)
            progress.advance("pairwise")
            second = await judge.compare(conversation, b, a)
            progress.advance("pairwise")
            return first, second

        try:
            return await asyncio.gather(*(one(i) for i in shared))
        finally:
            progress.finish("pairwise")
            await judge.aclose()

    try:
        return asyncio.run(run())
    except JudgeError as exc:
        raise EvalError(f"pairwise judging failed ({exc}); verdicts so far are cached, rerun to finish") from exc


def run_eval(spec: EvalSpec, out: Path, progress: Progress | None = None) -> dict:
    """Run (or resume) an evaluation; writes examples, metrics, report and plots; returns the metrics."""
    from evaluation.report import write_report

    progress = progress or NullProgress()
    items = open_run(spec, out)
    answers = collect_answers(spec, out, items, progress)
    cache = spec.judge.cache_path or str(out / JUDGE_CACHE)
    judge = JudgeClient(replace(spec.judge, cache_path=cache))
    judged = judge_answers(items, answers, judge, progress)
    rows = build_examples(items, answers, judged)
    if not rows:
        raise EvalError("no item could be answered and judged; see answers.jsonl for the reasons")
    _write_jsonl(out / EXAMPLES, rows)
    boot = Bootstrap(resamples=spec.bootstrap)
    examples = [to_example(r) for r in rows]
    metrics = compute_metrics(examples, boot)
    if spec.baseline:
        baseline_rows = load_examples(Path(spec.baseline))
        metrics["vs_baseline"] = {
            "baseline": str(spec.baseline),
            **compare_to_baseline(examples, [to_example(r) for r in baseline_rows], boot),
        }
        if spec.pairwise:
            verdicts = pairwise_verdicts(
                items, {r["id"]: r for r in rows}, {r["id"]: r for r in baseline_rows}, judge, progress
            )
            metrics["vs_baseline"]["response_win_rate"] = pairwise_win_rate(verdicts, boot) if verdicts else None
    skipped = {i: a["skipped"] for i, a in answers.items() if "skipped" in a}
    models = {a.get("model") for a in answers.values() if a.get("model")}
    metrics["run"] = {
        "label": spec.label or (sorted(models)[0] if models else Path(spec.model or spec.answers_from).name),
        "model": _shown(spec.model or json.loads((Path(spec.answers_from) / SPEC).read_text())["identity"]["model"]),
        "answers_from": spec.answers_from,
        "prompts": spec.prompts,
        "items": len(items),
        "judged": len(rows),
        "skipped": len(skipped),
        "skipped_examples": dict(list(skipped.items())[:5]),
        "readout_sources": {s: sum(r["source"] == s for r in rows) for s in ("generated", "forced")},
        "finish_reasons": {f: sum(r["finish_reason"] == f for r in rows) for f in {r["finish_reason"] for r in rows}},
        "judge": {"model": spec.judge.model, "base_url": spec.judge.base_url, "counters": judge.counters.as_dict()},
        "answers": asdict(spec.answers),
    }
    _write_json(out / METRICS, metrics)
    write_report(out, metrics, examples)
    return metrics
