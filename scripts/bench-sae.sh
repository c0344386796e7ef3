#!/usr/bin/env bash
# A 16k-feature SAE's encoder on SmolLM2's resid_post@15 over 512 tokens, against the forward pass
# (best of three each, one process). Prints one line; copy it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p prism-tests --test saes bench_a_16k_sae_encoder_against_the_forward_pass -- --ignored --nocapture 2>&1 | grep "SmolLM2 Q4_1, 512 tokens"
