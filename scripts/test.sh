#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs rlhfjax with the test extra, runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k parity -x`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" test
exec python -m pytest -q "$@"
