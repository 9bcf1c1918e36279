#!/usr/bin/env bash
# Fuzz the HTTP response reader, the body parser and the caIssuers/URL-policy path
# with atheris.
#
#   bash fuzz/run.sh [SECONDS_EACH]    (default 600; installs atheris in fuzz/.venv)
#
# Findings are written by libFuzzer as crash-*/timeout-* files in fuzz/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
venv=fuzz/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q atheris .
fi
"$venv/bin/python" fuzz/seed.py
mkdir -p fuzz/findings
for target in http parse aia; do
  echo "=== fuzz_$target for ${seconds}s"
  "$venv/bin/python" "fuzz/fuzz_$target.py" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=fuzz/findings/ -print_final_stats=1 2>&1 | tail -n 25
done
