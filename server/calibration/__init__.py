"""The server's calibration subsystem: what happens to answers after they are served.

- `ledger`: every served self-evaluation, judge verdicts and feedback joined to it (SQLite or PostgreSQL)
- `feedback_loop`: `/v1/feedback` intake and the background work it starts
- `shadow`: the shadow judge that scores a sample of live answers
- `monitor`: calibration drift of the live readout against those verdicts (a gauge)
- `risk_monitor`: the certified policy's realised risk on judged accepted answers (a gauge)

It sits below the answer path: it imports only the server's settings and metrics, and the service hands it
each served answer (checked by tests/unit/test_layering.py)."""
