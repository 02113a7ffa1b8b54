# Sourced by demo.sh and test.sh: make sure .venv exists with rlhfjax installed, then activate it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "rlhfjax needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11+" >&2
  exit 1
fi
# An explicit PYTHON must match the interpreter .venv was built with; otherwise the existing .venv
# would be used silently and PYTHON ignored.
VER='import sys; print("%d.%d" % sys.version_info[:2])'
if [ -n "${PYTHON:-}" ] && { [ -e .venv/bin/python ] || [ -L .venv/bin/python ]; }; then
  want="$("$PY" -c "$VER")"
  have="$(.venv/bin/python -c "$VER" 2>/dev/null || echo unknown)"
  if [ "$want" != "$have" ]; then
    echo "rlhfjax: .venv uses Python $have but PYTHON=$PYTHON is $want: delete .venv (rm -rf .venv) to rebuild it with $PYTHON, or drop PYTHON= to keep it" >&2
    exit 1
  fi
fi
EXTRAS="${1:-}"
STAMP=".venv/.rlhfjax-installed${EXTRAS:+-$EXTRAS}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $("$PY" --version)" >&2
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency list changed since the last install.
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "installing rlhfjax${EXTRAS:+[$EXTRAS]} into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
