# Developer shortcuts; CI runs .ci/run.
PY ?= .venv/bin/python

.PHONY: venv test lint bench bench-synapse vectors

venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy keys client relay

bench:
	$(PY) -m benchmarks

# Matrix Synapse for benchmark 7, in a virtual environment of its own (its
# dependencies are not ours); `make bench` finds it there.
bench-synapse:
	python3 -m venv .venv-synapse && .venv-synapse/bin/pip install -q 'matrix-synapse==1.163.2' 'psycopg2-binary>=2.9'

vectors:
	$(PY) tests/vectors/generate_keys_vectors.py
