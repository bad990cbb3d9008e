"""Test and demo support that ships with training but is not part of a real run: the loopback rule judge (CPU
demos, tests, benchmarks; not a quality judge) and the kill points that fault tests use to SIGKILL a run."""
