#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the built-in data: a short tour of sftrl.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
step() { printf '\n\033[1m$ sftrl %s\033[0m\n' "$*" >&2; "$PY" -m sftrl_cli "$@"; }
step validate
step methods list --paradigm hybrid
step graph lineage luffy
step graph path dft grpo
step studies --domain math --year 2025 --paradigm hybrid
mkdir -p out
step studies --method dpo --descendants --format csv > out/dpo_family_studies.csv
echo "$(($(wc -l < out/dpo_family_studies.csv) - 1)) studies use DPO or a method derived from it -> out/dpo_family_studies.csv"
step trends --out out/trends
awk '/^\| year/ {f = 1} f && n < 5 {print; n++}' out/trends/trends.md  # ours vs the survey
step run sft --steps 500 --out out/runs
step run luffy --steps 30 --out out/runs              # a hybrid, after the cached warm-start SFT stage
step run dpo --data examples/addition.jsonl --steps 30 --out out/runs   # your data, TRL's columns
step run sft,grpo --set sft.steps=400 --set grpo.steps=20 --task rg:basic_arithmetic --task-option eval_size=20 --out out/runs
step replicate deepseekmath --steps 20 --out out/runs      # a catalogued study's pipeline (sft -> grpo), measured
step studies --text deepseekmath --results --runs out/runs  # its reported numbers beside ours
step runs --out out/runs
step runs show luffy --out out/runs
step arena --methods sft,grpo,sft+grpo,luffy --seeds 1 --budget 3200 --base-steps 250 --out out/arena
step site --out out/site --runs out/runs                   # the explorer: open out/site/index.html
echo; echo "Figures and report: out/trends/trends.md; arena: out/arena/arena.md; explorer: out/site/index.html"
