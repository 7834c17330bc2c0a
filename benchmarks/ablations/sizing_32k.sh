#!/usr/bin/env bash
# Screen for issue 20, item 5 (size the transformer for the budget): a masked-LM of another
# shape given the CPU-minutes the study's 4 x 256 run took, then fine-tuned like the 32k study's
# `mlm_sg` arm (200 labels x 3 seeds, all labels x 1). Reuses the tokenizer and skip-gram run of
# `nlp-ssl study recipes/study/sentiment_rt_embeddings_32k.yaml` (run that first). Every shape
# keeps the study's 2,048 tokens per step (micro batch = 2048 / BLOCK), so only the shape moves.
#   bash benchmarks/ablations/sizing_32k.sh [LAYERS] [HIDDEN] [STEPS] [BLOCK]
# A width other than 256 needs skip-gram vectors of that width (the warm start refuses another):
#   EMBEDDINGS=runs/sizing-32k/sg-128 bash benchmarks/ablations/sizing_32k.sh 4 128 STEPS
# after `nlp-ssl pretrain runs/study-embeddings-32k/pretrain-sg/resolved_config.yaml
#   output_dir=runs/sizing-32k/sg-128 model.dim=128`.
set -euo pipefail
study=${STUDY:-runs/study-embeddings-32k}
layers=${1:-2} hidden=${2:-256} steps=${3:-1850} block=${4:-128}
embeddings=${EMBEDDINGS:-$study/pretrain-sg}
heads=$(( hidden / 64 ))
(( 2048 % block == 0 )) || { echo "BLOCK must divide 2048 (tokens per step), got $block" >&2; exit 2; }
micro=$(( 2048 / block ))
out=runs/sizing-32k/mlm-${layers}x${hidden}-b${block}-${steps}
nlp=${NLP_SSL:-nlp-ssl}
$nlp pretrain "$study/pretrain-mlm_sg/resolved_config.yaml" output_dir="$out" init_embeddings="$embeddings" \
  model.layers="$layers" model.hidden="$hidden" model.heads="$heads" model.intermediate=$(( hidden * 4 )) \
  data.block_size="$block" model.max_positions="$block" train.micro_batch_size="$micro" \
  train.max_steps="$steps" train.tracker=none
[ "${PROBE:-0}" = 1 ] && exit 0   # PROBE=1: pretraining only, to measure tokens/s for STEPS
for run in 200-s0 200-s1 200-s2 all-s0; do
  $nlp finetune "$study/finetune-mlm_sg-$run/resolved_config.yaml" init="$out/model" \
    output_dir="runs/sizing-32k/finetune-${layers}x${hidden}-b${block}-${steps}-$run" train.tracker=none
done
