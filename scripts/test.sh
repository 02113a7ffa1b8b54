#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs rlhfjax with the test extra, runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k parity -x`. Tests run in RLHFJAX_TEST_WORKERS
# pytest-xdist workers (default 2; 0 = in this process), a test file per worker at a time, files with
# `slow` tests first (tests/conftest.py orders them). Output is captured at the Python level only
# (--capture=sys), so what XLA writes before aborting a worker reaches the log (tests/conftest.py keeps its
# warnings out).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" test
exec python -m pytest -q -n "${RLHFJAX_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --max-worker-restart=0 \
  --capture=sys "$@"
