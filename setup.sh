#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv).
#   ./setup.sh          what the app needs
#   ./setup.sh --test   plus the test tools: pytest, Playwright, Debian's chromium,
#                       mricron-data (a real T1 used by the ingestion tests) and postgresql
#                       (the review tests run against SQLite and PostgreSQL)
# Re-running is cheap: pip runs only when a requirements file changed, npm only when the 3D viewer's
# lock file changed and its bundle only when its sources did.
set -euo pipefail
cd "$(dirname "$0")"

want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "setup.sh: Python 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 1; }

[[ -x .venv/bin/python ]] || "$PY" -m venv .venv

reqs=requirements.txt
(( want_tests )) && reqs=requirements-test.txt
stamp=.venv/.installed-$(cat requirements.txt "$reqs" | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$reqs"
  touch "$stamp"
fi

# The 3D viewer (components/niivue): @niivue/niivue from npm, bundled by esbuild into frontend/build/.
# Without Node the pages show their slice images and say how to build the viewer.
fe=components/niivue/frontend
if command -v npm >/dev/null; then
  ci_stamp=$fe/node_modules/.ci-$(sha256sum <"$fe/package-lock.json" | cut -c1-16)
  if [[ ! -f $ci_stamp ]]; then
    (cd "$fe" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$ci_stamp"
  fi
  build_stamp=$fe/build/.built-$(cat "$fe/package-lock.json" "$fe"/src/* | sha256sum | cut -c1-16)
  if [[ ! -f $build_stamp ]]; then
    rm -rf "$fe/build"
    (cd "$fe" && npm run --silent build)
    touch "$build_stamp"
  fi
else
  echo "setup.sh: npm not found, so the 3D viewer is not built (pages show slice images); install Node 20 and rerun" >&2
fi

if (( want_tests )); then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  [[ -f /usr/share/mricron/templates/ch2.nii.gz ]] || missing+=(mricron-data)
  # the review tests start their own throwaway PostgreSQL cluster (initdb/pg_ctl)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  if (( ${#missing[@]} )); then
    SUDO=""
    (( EUID != 0 )) && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
