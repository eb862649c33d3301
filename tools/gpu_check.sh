#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with an NVIDIA GPU, its driver, the
# CUDA 13 (or 12) libraries of PyTorch's wheels and PyTorch + transformers, but no Rust toolchain
# and no network. The binaries come from tools/gpu_prepare.sh, run beforehand on an ordinary
# x86-64 Linux machine (gpu-bundle/, carried along).
#
#   tools/gpu_check.sh OUT_DIR [SECONDS]
#
# Leaves at most four files in OUT_DIR, none in a subfolder (a GPU lease returns at most 8 files):
#   summary.txt     one line per stage ("NAME rc=N Ss" or "NAME skipped (...)"), appended as each
#                   stage ends, so a run killed from outside still says how far it got;
#   results.json    every stage's JSON output, its exit code and seconds, the GPU, NVRTC and the
#                   driver, rewritten after each stage;
#   logs.tar.gz     each stage's stdout and stderr (logs/NAME.out, logs/NAME.log), rewritten
#                   after each stage;
#   nvidia-smi.txt  the GPU before the first stage.
# The kernel cache and scratch files stay in a temporary folder outside OUT_DIR.
#
# Stages, most valuable first, each with its own time limit, skipped once the budget (SECONDS,
# default 300) is spent:
#   1. parity: every CUDA kernel against the CPU's, 10-step trajectories, the LSTM (cuda-tests);
#   2. gpt1 bench train at GPT-1's size (12 x 768, V 40,481, 512 tokens), bf16, 16 and 64 rows;
#   3. PyTorch eager on the same GPU (HF OpenAIGPTLMHeadModel, bf16 autocast, 16 x 512);
#   4. a checkpoint pre-trained on the GPU loads in transformers with gpt1's log-probs;
#   5. bench generate (KV-cached greedy decoding), fp32 and bf16;
#   6. bench finetune (32 x 128, bf16); bench train in fp32 (16 x 512);
#   7. torch.compile, only if 150 s are left.
#
# GPT1_CHECK_DEVICE=cpu: a dry run on a machine without a GPU (tiny sizes, parity skipped by the
# tests themselves, PyTorch stages fail where PyTorch is missing): proves the packaging.
# Stage selection for a rerun: GPT1_CHECK_ONLY="parity bench_bf16_b16" runs only those.
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR [SECONDS]}
budget=${2:-300}
dev=${GPT1_CHECK_DEVICE:-cuda}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$PWD/gpu-bundle
[ -x "$bin/gpt1" ] && [ -x "$bin/cuda-tests" ] || {
  echo "no gpu-bundle/: run tools/gpu_prepare.sh on a machine with Rust first" >&2
  exit 2
}
t0=$(date +%s)
left() { echo $((budget - ($(date +%s) - t0))); }
work=$(mktemp -d "${TMPDIR:-/tmp}/gpt1-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
logs=$work/logs
mkdir -p "$logs"
rm -f "$out/summary.txt" "$out/results.json" "$out/logs.tar.gz" "$out/nvidia-smi.txt"
: > "$out/summary.txt"

# The CUDA libraries of the Python wheels (PyTorch's own), for gpt1's library search and for
# the dynamic linker (libraries that open others by bare name).
GPT1_CUDA_LIBS=$(python3 - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib"))
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib64"))
print(":".join(dirs))
EOF
)${GPT1_CUDA_LIBS:+:$GPT1_CUDA_LIBS}
export GPT1_CUDA_LIBS
export LD_LIBRARY_PATH=${GPT1_CUDA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export XDG_CACHE_HOME=$work/cache
export PYTHONUNBUFFERED=1
(nvidia-smi 2>&1 || echo "nvidia-smi: not found") > "$out/nvidia-smi.txt"

# Sizes: GPT-1's on a GPU; tiny ones for the dry run on a CPU.
if [ "$dev" = cpu ]; then
  cfg=tiny rows=2 seq=64 big=4 ft="--batch 2 --seq 32" gen="--prompt-len 8 --new 8"
  require_gpu=0 steps=2
  # gpt1-mini's 30 steps took 36-46 s on a noisy 2-core CPU, against the stage's 45.
  small="--steps 10 --warmup 2"
else
  cfg=gpt1 rows=16 seq=512 big=64 ft="--batch 32 --seq 128" gen="--prompt-len 64 --new 128"
  require_gpu=1 steps=5 small="--steps 30 --warmup 5"
fi

# Rewrites results.json and logs.tar.gz from what the stages left so far.
pack() {
  python3 - "$logs" "$out" "$dev" <<'EOF'
import glob, json, os, sys
logs, out, dev = sys.argv[1:4]
res = {"device": dev, "stages": {}}
for line in open(os.path.join(out, "summary.txt")):
    f = line.split()
    if not f:
        continue
    st = {"line": line.strip()}
    for x in f[1:]:
        if x.startswith("rc="):
            st["rc"] = int(x[3:])
        elif x.endswith("s") and x[:-1].isdigit():
            st["seconds"] = int(x[:-1])
    p = os.path.join(logs, f[0] + ".out")
    if os.path.exists(p):
        text = open(p, errors="replace").read().strip()
        try:
            st["json"] = json.loads(text)
        except ValueError:
            for l in reversed(text.splitlines()):
                try:
                    st["json"] = json.loads(l)
                    break
                except ValueError:
                    pass
    e = os.path.join(logs, f[0] + ".log")
    if st.get("rc", 0) != 0 and os.path.exists(e):
        st["stderr_tail"] = open(e, errors="replace").read()[-2000:]
    res["stages"][f[0]] = st
smi = os.path.join(out, "nvidia-smi.txt")
if os.path.exists(smi):
    res["nvidia_smi_head"] = open(smi, errors="replace").read()[:1500]
tmp = os.path.join(out, "results.json.tmp")
json.dump(res, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(out, "results.json"))
EOF
  tar czf "$work/logs.tar.gz" -C "$work" logs && mv "$work/logs.tar.gz" "$out/logs.tar.gz"
}

# stage NAME TIMEOUT CMD...: runs CMD (stdout to logs/NAME.out, stderr to logs/NAME.log) unless
# the budget is spent or GPT1_CHECK_ONLY leaves it out; one line in summary.txt either way.
stage() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${GPT1_CHECK_ONLY:-}" ] && ! [[ " $GPT1_CHECK_ONLY " == *" $name "* ]]; then
    return 1
  fi
  local l
  l=$(left)
  if [ "$l" -lt 15 ]; then
    echo "$name skipped (budget spent)" | tee -a "$out/summary.txt"
    pack
    return 1
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  local s rc
  s=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$logs/$name.out" 2> "$logs/$name.log"
  rc=$?
  echo "$name rc=$rc $(($(date +%s) - s))s" | tee -a "$out/summary.txt"
  pack
  return $rc
}

# 0. Versions (NVRTC, driver, the GPU) into the results: seconds, and says what the libraries are.
stage versions 20 python3 - <<'EOF'
import ctypes, glob, json, os
r = {}
for d in os.environ.get("GPT1_CUDA_LIBS", "").split(":"):
    for p in glob.glob(os.path.join(d, "libnvrtc.so.1[23]")):
        try:
            lib = ctypes.CDLL(p)
            a, b = ctypes.c_int(), ctypes.c_int()
            lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
            r.setdefault("nvrtc", []).append({"path": p, "version": f"{a.value}.{b.value}"})
        except OSError as e:
            r.setdefault("nvrtc", []).append({"path": p, "error": str(e)})
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    v = ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(v))
    r["driver_cuda"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
except OSError as e:
    r["driver_cuda"] = f"no driver: {e}"
print(json.dumps(r))
EOF

# 1. Parity.
GPT1_REQUIRE_GPU=$require_gpu GPT1_REQUIRE_NVRTC=1 stage parity 100 \
  "$bin/cuda-tests" --test-threads 1

# 2. gpt1 at GPT-1's size in bf16: 16 rows, then 64 (the paper's batch in one pass).
stage bench_bf16_b$rows 50 "$bin/gpt1" bench train --config $cfg --batch $rows --seq $seq \
  --steps $steps --warmup 2 --precision bf16 --device "$dev" --json
stage bench_bf16_b$big 60 "$bin/gpt1" bench train --config $cfg --batch $big --seq $seq \
  --steps $steps --warmup 2 --precision bf16 --device "$dev" --json

# 3. PyTorch eager on the same GPU and shape.
stage torch_eager_b$rows 60 python3 tools/bench_torch_gpu.py --config $cfg --batch $rows \
  --seq $seq --steps $steps

# 4. A checkpoint pre-trained on the GPU loads in transformers with the same log-probs.
# The first 1 MB of the demo books: the first 97 % trains, the rest is held out.
python3 - "$work" <<'EOF'
import gzip, sys
w = sys.argv[1]
text = gzip.open("assets/demo/books.txt.gz", "rt", encoding="utf-8").read()[:1_000_000]
cut = text.rfind("\n", 0, int(len(text) * 0.97))
open(f"{w}/train.txt", "w", encoding="utf-8").write(text[:cut])
open(f"{w}/val.txt", "w", encoding="utf-8").write(text[cut:])
EOF
mkdir -p "$work/data"
stage prepare 40 sh -c "'$bin/gpt1' prepare --input '$work/train.txt' --out '$work/tr' \
    --val-fraction 0 && '$bin/gpt1' prepare --input '$work/val.txt' --out '$work/va' \
    --val-fraction 0 && mv '$work/tr/train.bin' '$work/data/train.bin' && \
    mv '$work/va/train.bin' '$work/data/val.bin'" &&
  stage pretrain_small 45 "$bin/gpt1" pretrain --data "$work/data/train.bin" \
    --val "$work/data/val.bin" --config gpt1-mini --batch 8 --seq 128 $small \
    --device "$dev" --precision bf16 --quiet --out "$work/small" &&
  python3 - "$work" <<'EOF' &&
# 4 x 64 held-out tokens as an int64 .npy (written by hand: the dry run's Python has no numpy).
import array, sys
w = sys.argv[1]
toks = array.array("H", open(f"{w}/data/val.bin", "rb").read()[1024 : 1024 + 2 * 256])
rows = array.array("q", toks)
head = "{'descr': '<i8', 'fortran_order': False, 'shape': (4, 64), }"
head += " " * (-(10 + len(head) + 1) % 64) + "\n"
with open(f"{w}/rows.npy", "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode())
    f.write(rows.tobytes())
EOF
  stage score_small 30 "$bin/gpt1" score --model "$work/small/final" --ids "$work/rows.npy" \
    --device "$dev" --json &&
  stage hf_load 45 python3 tools/check_hf_load.py "$work/small/final" "$work/rows.npy" \
    "$logs/score_small.out"

# 5. Generation, KV-cached greedy decoding, fp32 and bf16 (pinned bf16 weights).
stage generate_fp32 40 "$bin/gpt1" bench generate --config $cfg $gen --device "$dev" --json
stage generate_bf16 40 "$bin/gpt1" bench generate --config $cfg $gen --precision bf16 \
  --device "$dev" --json

# 6. Fine-tuning (bf16), then pre-training in fp32.
stage finetune_bf16 45 "$bin/gpt1" bench finetune --config $cfg $ft --steps $steps \
  --precision bf16 --device "$dev" --json
stage bench_fp32_b$rows 50 "$bin/gpt1" bench train --config $cfg --batch $rows --seq $seq \
  --steps 3 --warmup 1 --device "$dev" --json

# 7. torch.compile: the least informative, the likeliest to time out; only with time to spare.
if [ "$(left)" -ge 150 ]; then
  stage torch_compile_b$rows 140 python3 tools/bench_torch_gpu.py --config $cfg --batch $rows \
    --seq $seq --steps $steps --compile
elif [ -z "${GPT1_CHECK_ONLY:-}" ]; then
  echo "torch_compile_b$rows skipped (under 150 s left)" | tee -a "$out/summary.txt"
fi
echo "total $(($(date +%s) - t0))s" | tee -a "$out/summary.txt"
pack
