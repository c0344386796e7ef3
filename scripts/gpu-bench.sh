#!/usr/bin/env bash
# Prism on a real GPU: `prism bench` for SmolLM2 (and a 1B-shaped GGUF, when one is given) at 32,
# 128 and 512 tokens, without capture and with every capture, on each GPU feature path (exact:
# no subgroups; subgroups; fast: f16 weight staging), with GPU time per shader from timestamp
# queries (and the matmul shaders' own GFLOP/s, to set against the GPU's f32 peak), and the CPU
# alongside, written as one Markdown table for BENCHMARKS.md.
#
#   scripts/gpu-bench.sh [OUT_DIR]
#
# Environment:
#   PRISM     the prism binary (default target/release/prism; built when missing and cargo exists)
#   MODELS    models to time (default "smollm2", fetched when missing; a .gguf path works too)
#   BIG_GGUF  a 1B-shaped file from shared/reference/archs/make_big_gguf.py, added to MODELS
#   REPEATS   timed passes per point (default 10)
#   TOKENS    sequence lengths (default 32,128,512)
#
# On a bare machine without a Vulkan loader, carry the loader packages in .gl/ (see the device
# notes of the tool library) and this script unpacks them first. `prism info` in info-*.txt says
# which paths the adapter really took (a path it lacks falls back, and says so).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-gpu-bench-out}
REPEATS=${REPEATS:-10}
TOKENS=${TOKENS:-32,128,512}
PRISM=${PRISM:-target/release/prism}
mkdir -p "$OUT"

if ! ldconfig -p 2>/dev/null | grep -q libvulkan; then
    if compgen -G ".gl/*.deb" >/dev/null; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    else
        echo "no Vulkan loader (libvulkan) on this machine: install libvulkan1 or carry .gl/*.deb" >&2
        exit 1
    fi
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES="$icd"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/prism-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

if [ ! -x "$PRISM" ]; then
    command -v cargo >/dev/null || { echo "$PRISM is missing and cargo is not installed" >&2; exit 1; }
    cargo build --release --workspace --quiet
fi

MODELS=${MODELS:-smollm2}
[ -n "${BIG_GGUF:-}" ] && MODELS="$MODELS $BIG_GGUF"

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# name:environment of each path
PATHS="exact:PRISM_GPU_SUBGROUPS=off subgroups:PRISM_GPU_SUBGROUPS=on fast:PRISM_GPU_MODE=fast"
for path in $PATHS; do
    env "${path#*:}" "$PRISM" info smollm2 --backend gpu > "$OUT/info-${path%%:*}.txt" 2>&1 || true
done

for m in $MODELS; do
    name=$(basename "$m" .gguf)
    for cap in none all; do
        echo "== $name, capture $cap, cpu" >&2
        "$PRISM" bench "$m" --backend cpu --tokens "$TOKENS" --capture "$cap" \
            --repeats "$REPEATS" --profile --json > "$OUT/$name-cpu-$cap.json"
        for path in $PATHS; do
            echo "== $name, capture $cap, gpu ${path%%:*}" >&2
            env "${path#*:}" "$PRISM" bench "$m" --backend gpu --tokens "$TOKENS" --capture "$cap" \
                --repeats "$REPEATS" --profile --json > "$OUT/$name-${path%%:*}-$cap.json"
        done
    done
done

python3 - "$OUT" $MODELS <<'EOF'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
lines = ["| model | backend | path | tokens | capture | median ms | tokens/s | GFLOP/s | matmul GFLOP/s | top shaders (GPU ms per pass) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
adapter = None
for m in models:
    name = os.path.basename(m).removesuffix(".gguf")
    for cap in ("none", "all"):
        for path in ("cpu", "exact", "subgroups", "fast"):
            d = json.load(open(f"{out}/{name}-{path}-{cap}.json"))
            for p in d["passes"]:
                top = ", ".join(f"{op} {ms:.2f}" for op, ms, _ in sorted(p["profile"], key=lambda e: -e[1])[:4])
                backend = "gpu" if p["backend"].startswith("gpu") else "cpu"
                adapter = adapter or (p.get("adapter") if backend == "gpu" else None)
                lines.append(f"| {name} | {backend} | {'' if path == 'cpu' else path} | {p['tokens']} | {cap} | "
                             f"{p['median_ms']:.2f} | {p['tokens_per_s']:.0f} | {p['gflops']:.1f} | "
                             f"{'' if p.get('matmul_gflops') is None else format(p['matmul_gflops'], '.0f')} | {top} |")
table = "\n".join(lines)
open(f"{out}/table.md", "w").write(f"adapter: {adapter}\n\n{table}\n")
print(f"adapter: {adapter}\n\n{table}")
EOF
