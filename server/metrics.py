"""Prometheus metrics of the service, in their own registry (one per app, no global state).

Names carry the `see_` prefix; labels stay bounded (route templates, the five attributes, the readout
sources, the served model name), never request ids or text. Expected-score buckets sit at half-points so
each bucket collects the scores that round to one value of the 0-9 scale.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from selfeval.readout import ScoreDistribution
from server.engine import SchedulerSnapshot
from server.scoring import ReadoutCost

SCORE_BUCKETS = tuple(k + 0.5 for k in range(9)) + (9.0,)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


class ServiceMetrics:
    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "see_http_requests",
            "HTTP requests by route and status code",
            ["route", "method", "status_code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "see_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.expected_score = Histogram(
            "see_expected_score",
            "Expected self-score per attribute (0-9 scale)",
            ["model_name", "attribute"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.readouts = Counter(
            "see_readouts",
            "Self-evaluation readouts by source (generated, forced, unavailable)",
            ["model_name", "source"],
            registry=self.registry,
        )
        self.readout_steps = Counter(
            "see_readout_engine_steps",
            "Engine steps of forced readouts (one per digit, each computed in one engine pass)",
            ["model_name"],
            registry=self.registry,
        )
        self.readout_context_tokens = Counter(
            "see_readout_context_tokens",
            "Context tokens of forced-readout steps: already held by the engine (cached) or computed by the step",
            ["model_name", "kind"],
            registry=self.registry,
        )
        self.readout_step_time = Counter(
            "see_readout_step_seconds",
            "Time of forced-readout steps by phase: to_engine (sent -> queued in the engine, which takes input "
            "between passes), in_engine (queued -> computed), back (computed -> returned)",
            ["model_name", "phase"],
            registry=self.registry,
        )
        self.readout_duration = Histogram(
            "see_readout_duration_seconds",
            "Wall time of one forced readout (all five digit steps)",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prefix_cache_tokens = Counter(
            "see_engine_prefix_cache_tokens",
            "Prompt tokens the engine looked up in its prefix cache (queried) and found there (hit), all requests",
            ["model_name", "kind"],
            registry=self.registry,
        )
        self.entropy = Histogram(
            "see_score_entropy_nats",
            "Entropy of each attribute's score distribution (ln 10 = uniform)",
            ["model_name", "attribute"],
            buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.31),
            registry=self.registry,
        )
        self.label_mass = Histogram(
            "see_score_label_mass",
            "Probability the model put on digits at each score position",
            ["model_name", "attribute"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
            registry=self.registry,
        )
        self.decisions = Counter(
            "see_decisions",
            "Policy decisions (accept, review, escalate)",
            ["model_name", "action"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "see_time_to_first_token_seconds",
            "Streaming: time from request to the first generated text",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "see_requests_in_flight",
            "Requests currently being served (generation or readout)",
            ["model_name"],
            registry=self.registry,
        )
        self.work_in_progress = Gauge(
            "see_work_in_progress_tokens",
            "Tokens of engine room claimed by admitted model requests (prompt, max_tokens and readout per choice)",
            ["model_name"],
            registry=self.registry,
        )
        self.work_capacity = Gauge(
            "see_work_capacity_tokens",
            "The admission budget in tokens (SEE_MAX_PENDING_TOKENS, or twice the engine's KV cache)",
            ["model_name"],
            registry=self.registry,
        )
        self.engine_requests = Gauge(
            "see_engine_requests",
            "Requests inside the engine after its last step: waiting (queue depth) or running",
            ["model_name", "state"],
            registry=self.registry,
        )
        self.kv_cache_usage = Gauge(
            "see_engine_kv_cache_usage_ratio",
            "Fraction of the engine's KV cache in use after its last step",
            ["model_name"],
            registry=self.registry,
        )
        self.observe_scheduler(SchedulerSnapshot(waiting=0, running=0, kv_cache_usage=0.0))
        self.completion_tokens = Counter(
            "see_completion_tokens",
            "Answer tokens generated",
            ["model_name"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "see_prompt_tokens",
            "Prompt tokens processed",
            ["model_name"],
            registry=self.registry,
        )
        self._calibration_metrics()

    def _calibration_metrics(self) -> None:
        """Ledger, feedback, shadow judging and calibration drift (issue: calibration in production)."""
        self.ledger_writes = Counter(
            "see_ledger_writes",
            "Ledger writes by kind (response, feedback) and outcome (ok, error, timeout)",
            ["model_name", "kind", "outcome"],
            registry=self.registry,
        )
        self.ledger_connected = Gauge(
            "see_ledger_connected",
            "1 while the ledger holds a database connection; 0 while it is unreachable (writes are refused)",
            ["model_name"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "see_feedback",
            "Judge verdicts received, by source (api, shadow) and status (created, duplicate, conflict, unknown_id)",
            ["model_name", "source", "status"],
            registry=self.registry,
        )
        self.absolute_error = Histogram(
            "see_calibration_absolute_error",
            "|expected self-score - judge score| per attribute, one observation per new verdict (0-9 scale)",
            ["model_name", "attribute"],
            buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0),
            registry=self.registry,
        )
        self.rolling_mae = Gauge(
            "see_calibration_rolling_mae",
            "Mean absolute error of the expected self-score vs the judge over the recent feedback window",
            ["model_name", "attribute"],
            registry=self.registry,
        )
        self.rolling_ece = Gauge(
            "see_calibration_rolling_ece",
            "Top-label digit ECE over the recent feedback window",
            ["model_name", "attribute"],
            registry=self.registry,
        )
        self.window_size = Gauge(
            "see_calibration_window_records",
            "Feedback records in the recent and the reference window",
            ["model_name", "window"],
            registry=self.registry,
        )
        self.drift_delta = Gauge(
            "see_calibration_drift_delta",
            "Recent minus reference mean absolute error (mean over attributes; > 0 = worse)",
            ["model_name"],
            registry=self.registry,
        )
        self.drift = Gauge(
            "see_calibration_drift",
            "1 when recent calibration is worse than the reference beyond threshold and noise, else 0",
            ["model_name"],
            registry=self.registry,
        )
        self.certified_target = Gauge(
            "see_certified_accept_risk_target",
            "The certified policy's promise: P(bad | accept) at most this (absent without a certified policy)",
            ["model_name"],
            registry=self.registry,
        )
        self.certified_risk = Gauge(
            "see_certified_accept_risk",
            "Share of judged answers the certified rule accepts that the judge found bad (newest monitor window)",
            ["model_name"],
            registry=self.registry,
        )
        self.certified_risk_bound = Gauge(
            "see_certified_accept_risk_bound",
            "95% Clopper-Pearson interval of see_certified_accept_risk (bound: lower | upper)",
            ["model_name", "bound"],
            registry=self.registry,
        )
        self.certified_accepted = Gauge(
            "see_certified_accepted_verdicts",
            "Judged answers in the newest monitor window that the certified rule accepts",
            ["model_name"],
            registry=self.registry,
        )
        self.certified_alarm = Gauge(
            "see_certified_accept_risk_alarm",
            "1 when the realised accept risk is above the certified target beyond its 95% interval, else 0",
            ["model_name"],
            registry=self.registry,
        )
        self.shadow_requests = Counter(
            "see_shadow_judge_requests",
            "Shadow judging by outcome (queued, dropped_queue_full, judged, failed, error)",
            ["model_name", "outcome"],
            registry=self.registry,
        )
        self.shadow_queue = Gauge(
            "see_shadow_judge_queue_depth",
            "Responses waiting for the shadow judge",
            ["model_name"],
            registry=self.registry,
        )

    def observe_http(self, route: str, method: str, status_code: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status_code)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_readout(
        self, source: str, distributions: dict[str, ScoreDistribution] | None, cost: ReadoutCost | None = None
    ) -> None:
        self.readouts.labels(self.model_name, source).inc()
        if cost is not None and cost.steps:
            self.readout_steps.labels(self.model_name).inc(cost.steps)
            self.readout_context_tokens.labels(self.model_name, "cached").inc(cost.cached_tokens)
            self.readout_context_tokens.labels(self.model_name, "computed").inc(cost.computed_tokens)
            for phase in ("to_engine", "in_engine", "back"):
                self.readout_step_time.labels(self.model_name, phase).inc(getattr(cost, f"{phase}_s"))
            self.readout_duration.labels(self.model_name).observe(cost.wall_s)
        for attribute, distribution in (distributions or {}).items():
            self.expected_score.labels(self.model_name, attribute).observe(distribution.expected)
            self.entropy.labels(self.model_name, attribute).observe(distribution.entropy)
            self.label_mass.labels(self.model_name, attribute).observe(distribution.label_mass)

    def observe_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(self.model_name).inc(prompt_tokens)
        self.completion_tokens.labels(self.model_name).inc(completion_tokens)

    def observe_scheduler(self, snapshot: SchedulerSnapshot) -> None:
        self.engine_requests.labels(self.model_name, "waiting").set(snapshot.waiting)
        self.engine_requests.labels(self.model_name, "running").set(snapshot.running)
        self.kv_cache_usage.labels(self.model_name).set(snapshot.kv_cache_usage)
        self.prefix_cache_tokens.labels(self.model_name, "queried").inc(snapshot.prefix_cache_queried_tokens)
        self.prefix_cache_tokens.labels(self.model_name, "hit").inc(snapshot.prefix_cache_hit_tokens)

    def observe_absolute_errors(self, errors: dict[str, float]) -> None:
        for attribute, error in errors.items():
            self.absolute_error.labels(self.model_name, attribute).observe(error)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class HttpMetricsMiddleware:
    """Pure ASGI middleware recording each request's route, status and duration (until its last body byte).

    Pure ASGI rather than Starlette's `BaseHTTPMiddleware`, which pipes every streamed chunk through an
    extra task and memory stream: measurable time to first token on a 2-core machine.
    """

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths: frozenset[str] | None = None

    def route_label(self, scope) -> str:
        """The matched route template; for a request turned away before routing (401, 413, 429) its path when
        that is a fixed route of the app, so a full queue shows on the route it hit; else 'unmatched'."""
        if (route := scope.get("route")) is not None:
            return getattr(route, "path", "unmatched")
        if self.known_paths is None:
            routes = getattr(scope.get("app"), "routes", ())
            self.known_paths = frozenset(r.path for r in routes if "{" not in getattr(r, "path", "{"))
        return scope["path"] if scope["path"] in self.known_paths else "unmatched"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                elapsed = time.monotonic() - started
                self.metrics.observe_http(self.route_label(scope), scope["method"], status[0], elapsed)

        await self.app(scope, receive, send_and_record)
