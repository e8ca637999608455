#!/bin/bash
# On the GPU machine, as one device call (the tool library's `run`), after scripts/device_pack.sh here:
#   run(command="bash scripts/device_run.sh", carry=[".devcarry"], timeout_s=600)
# It unpacks the carried data and wheel, measures the card once (bench/: zoo trainer and SNE
# encoder, 2 minutes at most each), then runs or resumes `paper_tables.py --size $SIZE` (default
# full) with --budget-s set so that no new work starts after $LIMIT s into the call (default 420;
# the call's limit is 600 s; the last zoo unit, or a fit up to its next epoch end, runs past it), and
# $JOBS predictor jobs at a time (default 4; JOBS=1 if processes sharing the card misbehave).
# Exit 3 = out of budget with work left: call again at once. While the machine stays warm it
# keeps results/ (git-ignored), the zoos built so far and every finished predictor job; a fresh
# machine starts over. What comes back under $OUT: the results folder without the store, the log,
# and the benchmark output. Back here: `sne import-results <files_at>/gpu-full`.
# TASK=large_zoos runs scripts/large_zoos.py instead (issue 3's bar on six 4,000-network CPU-protocol
# zoos), after a smoke run of it on the card that stops the call at once if the CUDA path fails;
# its rows.csv, summary.csv and log come back under $OUT/large-zoos.
set -uo pipefail
TASK=${TASK:-paper}
SIZE=${SIZE:-full}
LIMIT=${LIMIT:-420}        # s into the call after which no new work starts (the call may run 600 s)
BENCH=${BENCH:-1}          # 0: skip the card measurements
JOBS=${JOBS:-4}            # predictor jobs sharing the card (small models: one alone leaves it idle)
# paper_tables.py --hyper and --method-train. By default the SNE of the `full` Dagster profile (statistics
# branch, ranking loss, 3 members, the records as targets: docs/RESULTS.md sessions 44-47); HYPER='{}' TRAIN='{}'
# trains the library default.
HYPER=${HYPER:-'{"sne": {"statistics_branch": true}}'}
TRAIN=${TRAIN:-'{"sne": {"rank_weight": 0.3, "members": 3, "aux_weight": 1}}'}
RES=results/gpu-$SIZE
mkdir -p "$RES" "${OUT:=/tmp/out}"
test -f data/datasets/MNIST/raw/train-images-idx3-ubyte || { mkdir -p data && tar -xzf .devcarry/datasets.tar.gz -C data; } || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .devcarry/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee -a "$RES.log"
if [ "$TASK" = large_zoos ]; then
    mkdir -p "$OUT/large-zoos"
    python3 scripts/large_zoos.py --out /tmp/large-smoke --size smoke --models 20 --zoos mnist/arch1 \
        --jobs 2 --quiet 2>&1 | tee "$OUT/large-zoos/smoke.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 1
    BUDGET=$(( LIMIT - SECONDS )); [ "$BUDGET" -lt 30 ] && BUDGET=30
    python3 scripts/large_zoos.py --out results/large-zoos --budget-s "$BUDGET" --jobs "${JOBS}" --quiet 2>&1 \
        | tee -a "$OUT/large-zoos/run.log"
    rc=${PIPESTATUS[0]}
    cp results/large-zoos/rows.csv results/large-zoos/summary.csv "$OUT/large-zoos/" 2>/dev/null
    exit "$rc"
fi
if [ "$BENCH" = 1 ] && [ ! -f results/bench.log ]; then
    { timeout 120 python3 -m bench.zoo_train; timeout 120 python3 -m bench.encoder; } 2>&1 | tee results/bench.log
fi
BUDGET=$(( LIMIT - SECONDS )); [ "$BUDGET" -lt 30 ] && BUDGET=30     # what the unpacking and benches left
python3 scripts/paper_tables.py --size "$SIZE" --out "$RES" --budget-s "$BUDGET" --jobs "$JOBS" --hyper "$HYPER" --method-train "$TRAIN" --quiet 2>&1 | tee -a "$RES.log"
rc=${PIPESTATUS[0]}
mkdir -p "$OUT/gpu-$SIZE"
find "$RES" -maxdepth 1 -type f -exec cp {} "$OUT/gpu-$SIZE/" \;
cp "$RES.log" results/bench.log "$OUT/" 2>/dev/null
exit "$rc"
