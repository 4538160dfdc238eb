#!/usr/bin/env bash
# Side-by-side A/B of one benchmark command on two trees: another commit (A) and this working tree (B),
# run alternately (A B A B ...) so drift in the machine's speed hits both alike.
#
#   bash bench/ab.sh REV PAIRS CMD...      e.g. bash bench/ab.sh 6a76c97 3 .venv/bin/python bench/engine_cpu.py --only vivace
#
# CMD runs in each tree's root with that tree first on PYTHONPATH and its own
# torch-extensions folder, so the C++ CPU ops are not rebuilt at every switch. Both sides run this
# tree's bench/ scripts (copied into A, so a new benchmark measures an old commit too) and this tree's
# .venv (linked), so `.venv/bin/python bench/x.py` works on both. Output: bench/results/ab-*/.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$1 pairs=$2
shift 2
out="bench/results/ab-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
base="/tmp/vivace-ab-$(git rev-parse --short "$rev")"
if [ ! -d "$base" ]; then
    mkdir -p "$base"
    git archive "$rev" | tar -x -C "$base"
fi
here=$(pwd)
ln -sfn "$here/.venv" "$base/.venv"
rm -rf "$base/bench" && cp -r "$here/bench" "$base/bench" && rm -rf "$base/bench/results"
for i in $(seq 1 "$pairs"); do
    for side in A B; do
        if [ "$side" = A ]; then tree=$base; else tree=$here; fi
        echo "== pair $i, $side ($tree)" | tee -a "$out/log.txt"
        (cd "$tree" && PYTHONPATH="$tree" TORCH_EXTENSIONS_DIR="/tmp/vivace-ab-ext-$side" "$@") 2>&1 | tee "$out/$side-$i.txt" >>"$out/log.txt"
    done
done
echo "logs in $out"
