"""Backchannel's benchmark suite: ``python -m benchmarks`` (see benchmarks/__main__.py).

Real relay nodes (``backchannel relay serve``) and baseline servers run as their own
processes on 127.0.0.1; the load generator runs in the harness process. Results go
to benchmarks/results/*.json and docs/performance.md is regenerated from them.
"""
