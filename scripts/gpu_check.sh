#!/usr/bin/env bash
# The GPU check behind the "On a GPU" section of docs/benchmarks.md: the CUDA tests, the
# step benchmark on the device, one real quickstart run on the GPU and its evaluation.
# Run from the repository root on a machine with a CUDA GPU; results go to $OUT (default
# ./gpu_check_out). Packages the machine lacks may be given as wheels in .whl/ (they are
# installed to /tmp/site, without their dependencies); otherwise install the project first.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "=== $1 at $(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
fi
python3 -c "import torch, mcvae_framework; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
stamp tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_acceleration.py 2>&1 | tail -6
stamp bench
timeout 240 python3 benchmarks/bench_training_speed.py --device cuda --batch-sizes 128,1024,4096 \
    --precisions fp32,bf16 --compiles none,default --steps 30 2>&1 | grep -v "^|" | tee $OUT/bench.txt
cp docs/benchmarks.md benchmarks/results/gpu_training_speed.json $OUT/
stamp train
timeout 150 mcvae train configs/quickstart_gpu.yaml --out-dir /tmp/qs --overwrite --set training.device=cuda \
    --set training.progress=false 2>&1 | tail -25 | tee $OUT/train.txt
cp /tmp/qs/metrics.csv $OUT/qs_metrics.csv 2>/dev/null
stamp evaluate
timeout 60 mcvae evaluate /tmp/qs --device cuda --pose-mean intrinsic 2>&1 | tail -12
cp /tmp/qs/report.json $OUT/qs_report.json 2>/dev/null
stamp graph_1m
# issue 29: the invariant graph of a million rotated Fashion-MNIST images (written once as a
# memory-mapped .npy), through mcvae graph's code path; faiss searches on the GPU when the
# installed faiss has GPU support (faiss-gpu), on the CPU otherwise (the features pass runs on
# the CPU either way). Then one training epoch on the same file, streamed, graph off.
timeout 600 python3 benchmarks/bench_graph_scale.py --images 1000000 --data-dir /tmp/g1m --recall-sample 1000 \
    --no-write 2>&1 | grep -v "img/s" | tail -6 | tee $OUT/graph_1m.txt
cat > /tmp/g1m/epoch.yaml <<'YAML'
data: {type: arrays, path: /tmp/g1m/fashion_rotated_1000000.npy, storage: stream}
group: {type: so2, angle_deg: [-90, 90]}
encoder: {type: conv}
decoder: {type: mlp}
prior: {type: gmm, n_components: 10}
model: {z_cluster_dim: 10, z_style_dim: 8}
loss: {mode: unsupervised, n_augment: 4}
training: {epochs: 1, batch_size: 1024, num_workers: 8, eval_every: 0, device: cuda, out_dir: /tmp/g1m/run}
YAML
stamp epoch_1m
timeout 600 mcvae train /tmp/g1m/epoch.yaml --overwrite --set training.progress=false 2>&1 | tail -8 \
    | tee $OUT/epoch_1m.txt
cp /tmp/g1m/run/metrics.csv $OUT/epoch_1m_metrics.csv 2>/dev/null
stamp done
