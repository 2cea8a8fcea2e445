# Developer shortcuts; CI runs .ci/run.
PY ?= .venv/bin/python

.PHONY: venv test lint bench vectors

venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy keys client relay

bench:
	$(PY) -m benchmarks

vectors:
	$(PY) tests/vectors/generate_keys_vectors.py
