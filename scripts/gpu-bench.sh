#!/usr/bin/env bash
# Prism on a real GPU: `prism bench` for SmolLM2 (and a 1B-shaped GGUF, when one is given) at 32,
# 128 and 512 tokens, without capture and with every capture, with GPU time per shader from
# timestamp queries, written as one Markdown table for BENCHMARKS.md.
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
# notes of the tool library) and this script unpacks them first. The GPU is used in exact mode
# (f32 activations, weights decoded exactly): the only path Prism has today.
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

"$PRISM" info smollm2 --backend gpu > "$OUT/info.txt" 2>&1 || true
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

for m in $MODELS; do
    name=$(basename "$m" .gguf)
    for cap in none all; do
        echo "== $name, capture $cap" >&2
        "$PRISM" bench "$m" --backend gpu,cpu --tokens "$TOKENS" --capture "$cap" \
            --repeats "$REPEATS" --profile --json > "$OUT/$name-$cap.json"
    done
done

python3 - "$OUT" $MODELS <<'EOF'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
lines = ["| model | backend | tokens | capture | median ms | tokens/s | GFLOP/s | top shaders (GPU ms per pass) |",
         "|---|---|---|---|---|---|---|---|"]
for m in models:
    name = os.path.basename(m).removesuffix(".gguf")
    for cap in ("none", "all"):
        d = json.load(open(f"{out}/{name}-{cap}.json"))
        for p in d["passes"]:
            top = ", ".join(f"{op} {ms:.2f}" for op, ms, _ in sorted(p["profile"], key=lambda e: -e[1])[:4])
            backend = "gpu" if p["backend"].startswith("gpu") else "cpu"
            lines.append(f"| {name} | {backend} | {p['tokens']} | {cap} | {p['median_ms']:.2f} | "
                         f"{p['tokens_per_s']:.0f} | {p['gflops']:.1f} | {top} |")
first = json.load(open(f"{out}/{os.path.basename(models[0]).removesuffix('.gguf')}-none.json"))
adapter = first["passes"][0].get("adapter")
table = "\n".join(lines)
open(f"{out}/table.md", "w").write(f"adapter: {adapter}\n\n{table}\n")
print(f"adapter: {adapter}\n\n{table}")
EOF
