#!/usr/bin/env bash
# `prism batch` against PyTorch + transformers (a `datasets` map) on the same corpus and GGUF, side
# by side in one run: tokens/s of each and their ratio, native and AVX2-capped, and --pack with
# one window per pass against four. Needs a release build and a Python with
# scripts/bench_batch_torch.py's pinned packages (PYTHON, default python3).
#   scripts/bench-batch.sh [MODEL.gguf] [DOCS] [CONTEXT]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-sample-models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
docs="${2:-300}"
context="${3:-128}"
py="${PYTHON:-python3}"
prism="${PRISM:-${CARGO_TARGET_DIR:-target}/release/prism}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A corpus of DOCS documents of 20 to 120 words (seeded, the same every time).
"$py" - "$docs" > "$work/corpus.txt" <<'PY'
import random, sys
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her one all we can there been if more when will would who so no colour purple "
         "blue red river stone bridge morning light prediction compression model token").split()
r = random.Random(20)
for _ in range(int(sys.argv[1])):
    print(" ".join(r.choice(words) for _ in range(r.randint(20, 120))))
PY
# prism batch: the CPU's own instruction set, then capped at AVX2 (what most laptops have), then
# --pack with one window per pass against the default four; each the whole command.
timed() { local s e; s=$(date +%s.%N); "$@" 2>/dev/null >/dev/null; e=$(date +%s.%N); echo "$s $e"; }
native=$(timed "$prism" batch "$model" --corpus "$work/corpus.txt" --out "$work/out" --context "$context" --backend cpu)
avx2=$(timed env PRISM_CPU_ISA=avx2 "$prism" batch "$model" --corpus "$work/corpus.txt" --out "$work/avx2" --context "$context" --backend cpu)
pack1=$(timed "$prism" batch "$model" --corpus "$work/corpus.txt" --out "$work/pack1" --context "$context" --pack --bos --windows-per-pass 1 --backend cpu)
pack4=$(timed "$prism" batch "$model" --corpus "$work/corpus.txt" --out "$work/pack4" --context "$context" --pack --bos --windows-per-pass 4 --backend cpu)
cmp -s "$work/pack1/tokens-00000.parquet" "$work/pack4/tokens-00000.parquet" || { echo "packed shards differ" >&2; exit 1; }
count() { "$prism" batch --summary "$1" --json | "$py" -c "import json,sys; print(sum(d['tokens'] for d in json.load(sys.stdin)['docs']))"; }
tokens=$(count "$work/out")
ptokens=$(count "$work/pack1")
torch_json=$("$py" scripts/bench_batch_torch.py --gguf "$model" --corpus "$work/corpus.txt" --context "$context")
"$py" - "$native" "$avx2" "$pack1" "$pack4" "$tokens" "$ptokens" "$torch_json" <<'PY'
import json, sys
def secs(a):
    s, e = map(float, a.split())
    return e - s
native, avx2, pack1, pack4 = (secs(a) for a in sys.argv[1:5])
tokens, ptokens, t = int(sys.argv[5]), int(sys.argv[6]), json.loads(sys.argv[7])
row = lambda n, s: {"tokens": n, "seconds": round(s, 2), "tokens_per_s": round(n / s, 1)}
tp = t["tokens_per_s"]
print(json.dumps({
    "prism": row(tokens, native), "prism_avx2": row(tokens, avx2),
    "prism_pack_1_window_per_pass": row(ptokens, pack1), "prism_pack_4_windows_per_pass": row(ptokens, pack4),
    "torch": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()},
    "prism_over_torch": round(tokens / native / tp, 2), "prism_avx2_over_torch": round(tokens / avx2 / tp, 2),
    "pack_4_over_1": round(pack1 / pack4, 2)}))
PY
