#!/usr/bin/env bash
# Prism's CPU backend against PyTorch + transformers fp32, side by side in one run, on the same
# GGUF (transformers dequantizes it to float32 with its own loader) and the same token ids.
#
#   scripts/bench-cpu.sh [MODEL]        MODEL: a sample name or a .gguf path (default smollm2)
#
# Rounds are interleaved (Prism at the machine's best ISA, Prism capped at AVX2 with
# PRISM_CPU_ISA=avx2, PyTorch), so that a noisy machine slows all three alike; each figure is the
# median over rounds of each round's median. Prints a table with ratios (> 1: Prism is faster).
#
# Environment: ROUNDS (3), TOKENS (128,512), GENERATE (64 new tokens; 0 skips generation),
# PRISM_BENCH_VENV (a venv with torch and transformers; created under target/ when missing;
# benchmarks only, the tests never need Python).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-smollm2}
ROUNDS=${ROUNDS:-3}
TOKENS=${TOKENS:-128,512}
GENERATE=${GENERATE:-64}
VENV=${PRISM_BENCH_VENV:-target/bench-venv}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV (torch, transformers, gguf; about 1 GB of downloads)" >&2
    python3 -m venv "$VENV" || {
        echo "python3 -m venv failed; on Debian: apt-get install python3-venv" >&2
        exit 1
    }
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.24.0 gguf==0.19.0 numpy
fi

cargo build --release --workspace --quiet
PRISM=target/release/prism
GGUF=$("$PRISM" info "$MODEL" --json --backend cpu | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["path"])')
case "$GGUF" in
    *.gguf) ;;
    *) echo "$GGUF: the PyTorch side loads GGUF files only" >&2; exit 1 ;;
esac
IDS=$("$PRISM" bench "$MODEL" --backend cpu --tokens 1 --repeats 1 --json | "$VENV/bin/python" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ids"]))')

echo "model $GGUF; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
grep -q avx512f /proc/cpuinfo && echo "this CPU has AVX-512" >&2 || echo "this CPU has no AVX-512 (both Prism columns run AVX2)" >&2

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    "$PRISM" bench "$MODEL" --backend cpu --tokens "$TOKENS" --generate "$GENERATE" --json >"$OUT/native-$r.json"
    PRISM_CPU_ISA=avx2 "$PRISM" bench "$MODEL" --backend cpu --tokens "$TOKENS" --generate "$GENERATE" --json >"$OUT/avx2-$r.json"
    "$VENV/bin/python" scripts/bench_torch.py --gguf "$GGUF" --ids "$IDS" --tokens "$TOKENS" \
        --generate "$GENERATE" >"$OUT/torch-$r.json" 2>"$OUT/torch-$r.log" || {
        cat "$OUT/torch-$r.log" >&2
        exit 1
    }
done

"$VENV/bin/python" - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
load = lambda name, r: json.load(open(f"{out}/{name}-{r}.json"))
med = statistics.median
rows, gen = {}, {}
for r in range(1, rounds + 1):
    for name in ("native", "avx2"):
        d = load(name, r)
        for p in d["passes"]:
            rows.setdefault(p["tokens"], {}).setdefault(name, []).append(p["median_ms"])
            rows[p["tokens"]].setdefault(name + "_rss", []).append(p["peak_rss_bytes"] / 1e6)
        for g in d["generate"]:
            gen.setdefault(name, []).append(g["tokens_per_s"])
            new_tokens = g["new_tokens"]
        isa = d["cpu_isa"]
        if name == "native":
            native_isa = isa
    t = load("torch", r)
    for p in t["points"]:
        rows.setdefault(p["tokens"], {}).setdefault("torch_" + p["attention"], []).append(p["median_ms"])
    if "generate" in t:
        gen.setdefault("torch", []).append(t["generate"]["tokens_per_s"])
print(f"Prism native ISA: {native_isa}; capped: avx2; PyTorch {t['torch']} ({t['threads']} threads); {rounds} rounds\n")
print("| tokens | PyTorch sdpa ms | PyTorch eager ms | Prism " + native_isa + " ms | Prism avx2 ms | ratio " + native_isa + " | ratio avx2 | Prism peak RSS MB |")
print("|---|---|---|---|---|---|---|---|")
for n, v in sorted(rows.items()):
    best_torch = min(med(v["torch_sdpa"]), med(v["torch_eager"]))
    print(f"| {n} | {med(v['torch_sdpa']):.0f} | {med(v['torch_eager']):.0f} | {med(v['native']):.0f} | {med(v['avx2']):.0f} "
          f"| {best_torch / med(v['native']):.2f}x | {best_torch / med(v['avx2']):.2f}x | {max(v['native_rss']):.0f} |")
if gen:
    print("\n| greedy generation | PyTorch generate tok/s | Prism " + native_isa + " tok/s | Prism avx2 tok/s | ratio " + native_isa + " | ratio avx2 |")
    print("|---|---|---|---|---|---|")
    g = {k: med(v) for k, v in gen.items()}
    print(f"| {new_tokens} new tokens after 8 | {g['torch']:.1f} | {g['native']:.1f} | {g['avx2']:.1f} | {g['native'] / g['torch']:.2f}x | {g['avx2'] / g['torch']:.2f}x |")
print("\nratio = the faster PyTorch attention / Prism (time), or Prism / PyTorch (tokens/s): above 1 means Prism is faster.")
EOF
