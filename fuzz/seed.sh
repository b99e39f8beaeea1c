#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (not committed) with seeds for every fuzz target:
#   * fuzz/seeds/<target>/ and fuzz/regressions/<target>/ (committed, small);
#   * files Myelin writes (a small store with rolled segments, a sealed backup manifest) and
#     Axon Server's fixture files cut down to a few KiB, by examples/write_seeds.rs.
# Usage: fuzz/seed.sh [fixtures dir]   (default: ../shared/fixtures/axon-server-se next to the repo)
# Compiles on stable; never reads standard input. See docs/FUZZING.md.
set -euo pipefail

cd "$(dirname "$0")"
fixtures="${1:-../../shared/fixtures/axon-server-se}"
targets=(segment_block index_file bloom_file backup_manifest backup_scan recovery event_validate raft_log)

for target in "${targets[@]}"; do
    mkdir -p "corpus/${target}"
    for source in "seeds/${target}" "regressions/${target}"; do
        if [[ -d "${source}" ]]; then
            find "${source}" -maxdepth 1 -type f -exec cp -- {} "corpus/${target}/" \;
        fi
    done
done

if [[ -d "${fixtures}" ]]; then
    cargo run --quiet --example write_seeds -- "${fixtures}" corpus </dev/null
else
    echo "no fixtures at ${fixtures}: writing Myelin's own files only" >&2
    empty="$(mktemp -d)"
    trap 'rm -rf "${empty}"' EXIT
    cargo run --quiet --example write_seeds -- "${empty}" corpus </dev/null
fi

for target in "${targets[@]}"; do
    echo "corpus/${target}: $(find "corpus/${target}" -type f | wc -l) files"
done
