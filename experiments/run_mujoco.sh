#!/usr/bin/env bash
# Every MuJoCo run of experiments/README.md, in priority order, from the repository root:
#   bash experiments/run_mujoco.sh            (OUT=dir to write elsewhere)
# Needs the D4RL-style datasets (python experiments/mujoco_data.py --experts DIR --env hopper).
# Resumable: each finished (cell, seed) is cached under $OUT/runs/, and a rerun skips it; seeds
# are added one round at a time so the central comparison has every method at seed k before
# anything runs seed k+1.
set -euo pipefail
CFG=configs/experiments/mujoco_hopper.yaml
OUT=${OUT:-runs/experiments/mujoco_hopper}
MR=d4rlstyle/hopper/medium-replay-v0
ME=d4rlstyle/hopper/medium-expert-v0
MED=d4rlstyle/hopper/medium-v0
experiment() { python -m lit_seqrl experiment "$@" --config "$CFG" --out "$OUT"; }

# 1. The central claim: DT vs BC vs %BC on medium-replay (no expert episodes in the data).
for n in 1 2 3; do experiment backbones --dataset "$MR" --variant DT BC "%BC (10%)" --seeds "$n"; done
# 2. DT on medium-expert, then the conditioning curve (cached runs: no training).
for n in 1 2 3; do experiment backbones --dataset "$ME" --variant DT --seeds "$n"; done
experiment conditioning --dataset "$MR" --variant DT BC "%BC (10%)" --seeds 3
# 3. Delayed rewards (DT Table 7; BC and %BC never read rewards: their runs are those of step 1)
#    and context length at equal action targets (DT Table 5), one seed round at a time.
for n in 1 2 3; do
  python -m lit_seqrl experiment delayed --config configs/experiments/mujoco_hopper_delayed.yaml \
    --variant DT --seeds "$n" --out "$OUT-delayed"
  python -m lit_seqrl experiment context --config configs/experiments/mujoco_hopper_context.yaml \
    --seeds "$n" --out "$OUT-context"
done
# 4. The rest of the backbone table.
for n in 1 2 3; do experiment backbones --dataset "$MR" "$ME" "$MED" --seeds "$n"; done
# 5. DT with twice the steps on medium-replay (the central claim's budget question), then BC and %BC there.
for n in 1 2 3; do
  python -m lit_seqrl experiment backbones --config configs/experiments/mujoco_hopper_8k.yaml \
    --dataset "$MR" --variant DT BC "%BC (10%)" --seeds "$n" --out "${OUT}_8k"
done
python -m lit_seqrl experiment conditioning --config configs/experiments/mujoco_hopper_8k.yaml \
  --dataset "$MR" --variant DT BC "%BC (10%)" --seeds 3 --out "${OUT}_8k"
