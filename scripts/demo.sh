#!/usr/bin/env bash
# The offline training demo: the tiny FaceXFormer learns all eight tasks from synthetic faces on a
# CPU, then is evaluated on held-out synthetic faces and analyses one of them.
#
#   bash scripts/demo.sh            # writes demo/ (synthetic data, run, evaluation, analysis)
#
# Steps (each is a plain facex command; see the README):
#   1. facex data synth    500 faces in the native layouts of LaPa, 300W, 300W-LP/AFLW2000,
#                          CelebA, UTKFace and COFW (80% train, 20% held out; UTKFace's
#                          held-out faces under utkface_test)
#   2. facex train         four stages (docs/training.md says why):
#                          configs/demo-synthetic.toml  every task from scratch, 400 steps of 8
#                          configs/demo-decoder.toml    a fresh decoder on the frozen encoder,
#                                                       landmarks and pose, 600 steps of 8
#                          configs/demo-utkface.toml    that decoder on age, gender and race
#                                                       (UTKFace rows alone), 750 steps of 8
#                          configs/demo-finish.toml     every task again, frozen encoder, 300 steps
#   3. facex eval          held-out faces: parsing F1, NME, pose MAE, attributes, visibility,
#                          age, gender and race, each beside its trivial baseline
#   4. facex analyze       one held-out face with the trained weights: JSON, parsing, overlay
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p facex
facex=target/release/facex
rm -rf demo
start=$(date +%s)
$facex data synth --out demo/synth --count 500 --seed 1
$facex train configs/demo-synthetic.toml --out demo/run --steps 400
$facex train configs/demo-decoder.toml --out demo/decoder --steps 600
$facex train configs/demo-utkface.toml --out demo/utkface --steps 750
$facex train configs/demo-finish.toml --out demo/final --steps 300
trained=$(date +%s)
$facex eval --weights demo/final/weights.safetensors --json demo/eval.json \
  --dataset lapa --root demo/synth/lapa --split test \
  --dataset 300w --root demo/synth/300w --split test \
  --dataset aflw2000 --root demo/synth/aflw2000 --split test \
  --dataset celeba --root demo/synth/celeba --split test \
  --dataset cofw --root demo/synth/cofw --split test \
  --dataset utkface --root demo/synth/utkface_test --split all
face=$(ls demo/synth/celeba/img_align_celeba | tail -n 1)
$facex analyze "demo/synth/celeba/img_align_celeba/$face" --no-detect \
  --weights demo/final/weights.safetensors --out demo/analysis
end=$(date +%s)
echo
for stage in run decoder utkface final; do
  echo "demo/$stage: loss per task (mean over each logged window of 10 steps):"
  grep '"losses"' "demo/$stage/log.jsonl" | awk 'NR == 1 || NR % 10 == 0' \
    | sed -E 's/.*"losses":\{([^}]*)\}.*"step":([0-9]+).*/step \2: \1/; s/"//g; s/,/  /g' \
    | sed -E 's/([0-9]\.[0-9]{3})[0-9]*/\1/g'
done
echo
echo "data + training: $((trained - start)) s; evaluation + analysis: $((end - trained)) s"
echo "analysis of one held-out face: demo/analysis/${face%.*}.overlay.png"
