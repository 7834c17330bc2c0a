#!/usr/bin/env bash
# Pretraining ablations (issue "make self-supervised pretraining pay off"), end to end:
# the masked-LM variants, each changing one thing, then one study that fine-tunes every variant
# on rotten_tomatoes with the sentiment study's recipe (200 labels x 3 seeds, all labels x 1).
# ~2.5 h on 2 CPU cores. Finished runs are skipped, so it is safe to re-run.
#   bash benchmarks/ablations/run_pretraining_ablation.sh
# Results: runs/study-ablation/report.md (summarised in docs/pretraining-ablations.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=recipes/pretrain/mlm_imdb.yaml
[ -d runs/tokenizer-bpe-8k ] || nlp-ssl tokenizer recipes/tokenizer/bpe_imdb.yaml

pretrain() {  # output folder, then overrides
    local out=$1; shift
    [ -f "$out/metrics.json" ] || nlp-ssl pretrain "$recipe" "output_dir=$out" "$@"
}
# the old default: BERT (post-LN), batch 32 x 700 steps
pretrain runs/abl/mlm-bert-700 model.architecture=bert train.max_steps=700 train.micro_batch_size=32 \
    train.eval_every=100 train.eval_max_batches=20 train.save_every=200
# one change at a time, at 400 steps x 32 (1.6M tokens, ~4.5 min each)
pretrain runs/abl/mlm-preln-400 model.architecture=roberta-prelayernorm train.max_steps=400 train.micro_batch_size=32
pretrain runs/abl/mlm-modernbert-400 model.architecture=modernbert train.max_steps=400 train.micro_batch_size=32
pretrain runs/abl/mlm-mb-lr2e3-400 model.architecture=modernbert train.max_steps=400 train.micro_batch_size=32 train.lr=2e-3
pretrain runs/abl/mlm-mb-b16-800 model.architecture=modernbert train.max_steps=800 train.micro_batch_size=16
# the default recipe as it is (ModernBERT, batch 16 x 1,400 steps), for the fine-tuning ablations
pretrain runs/abl/mlm-mb-b16-1400
# the same, pretrained longer (~20 min)
pretrain runs/abl/mlm-mb-b16-3500 model.architecture=modernbert train.max_steps=3500 train.micro_batch_size=16 \
    train.eval_every=500 train.save_every=500

# replaced-token detection (ELECTRA-style) instead of masked-LM, the default recipe otherwise (~9 min)
[ -f runs/abl/rtd-1400/metrics.json ] || nlp-ssl pretrain recipes/pretrain/rtd_imdb.yaml output_dir=runs/abl/rtd-1400

nlp-ssl study benchmarks/ablations/pretraining_sentiment_rt.yaml
nlp-ssl study benchmarks/ablations/rtd_sentiment_rt.yaml              # ~10 min
nlp-ssl study benchmarks/ablations/finetune_recipe_sentiment_rt.yaml   # fine-tuning lr / batch, ~12 min
