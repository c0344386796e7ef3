#!/usr/bin/env bash
# `prism batch` against PyTorch + transformers (a `datasets` map) on the same corpus and GGUF, side
# by side in one run: tokens/s of each and their ratio. Needs a release build and a Python with
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
start=$(date +%s.%N)
"$prism" batch "$model" --corpus "$work/corpus.txt" --out "$work/out" --context "$context" --backend cpu 2>/dev/null
end=$(date +%s.%N)
tokens=$("$prism" batch --summary "$work/out" --json | "$py" -c "import json,sys; print(sum(d['tokens'] for d in json.load(sys.stdin)['docs']))")
torch_json=$("$py" scripts/bench_batch_torch.py --gguf "$model" --corpus "$work/corpus.txt" --context "$context")
"$py" - "$start" "$end" "$tokens" "$torch_json" <<'PY'
import json, sys
start, end, tokens, t = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
secs = end - start
p = tokens / secs
print(json.dumps({"prism": {"tokens": tokens, "seconds": round(secs, 2), "tokens_per_s": round(p, 1)},
                  "torch": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()},
                  "prism_over_torch": round(p / t["tokens_per_s"], 2)}))
PY
