#!/usr/bin/env bash
# Check the local data mirror against its SHA256SUMS (the shared pack ships one).
set -euo pipefail
dir="${1:-${NLP_SSL_DATA_DIR:-$(dirname "$0")/../../shared/data}}"
cd "$dir"
sha256sum -c SHA256SUMS
