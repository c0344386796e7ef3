#!/usr/bin/env python3
"""Checks Prism's experiment commands (generate, patch, ablate, run --interventions) against an
intervention reference file made by PyTorch + transformers, through the CLI, with the tolerances
the reference README states.

    python3 scripts/check_interventions.py REFERENCE.json [--prism target/release/prism]
        [--only generation,patching,ablation,interventions] [--backend cpu|gpu]

Prints one line per case and a summary; exits 1 when any case is off.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TOL = {
    "p": 0.01,
    "entropy": 0.01,
    "effect": 0.02,
    "metric": 0.01,
    "delta_bits": 0.02,
    "baseline_bits": 0.05,
    "surprisal": 0.01,
}


def prism(args, exe, backend):
    cmd = [exe] + args + ["--backend", backend, "--json"]
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout), time.time() - t


def ids_arg(ids):
    return ",".join(str(i) for i in ids)


def max_diff(a, b):
    worst = 0.0
    for x, y in zip(a, b):
        if isinstance(x, list):
            worst = max(worst, max_diff(x, y))
        elif x is None or y is None:
            if x is not y:
                return float("inf")
        else:
            worst = max(worst, abs(x - y))
    return worst


def same_shape(a, b):
    if isinstance(a, list) != isinstance(b, list):
        return False
    if not isinstance(a, list):
        return True
    return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b))


class Checker:
    def __init__(self, block, ref_dir, exe, backend):
        self.block = block
        self.ref_dir = ref_dir
        self.exe = exe
        self.backend = backend
        self.model = block["model"]["prism_model"]
        self.tokenized = block["model"]["has_tokenizer"]
        self.failures = 0

    def report(self, kind, name, problems, seconds, detail=""):
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {kind:13} {name:34} {seconds:6.1f}s {detail}")
        for p in problems:
            print(f"       {p}")
        self.failures += bool(problems)

    def generation(self, case):
        args = ["generate", self.model, "--max-tokens", str(case["max_new_tokens"]), "--temperature", "0"]
        if self.tokenized:
            args += ["--prompt", case["prompt"]]
            if case.get("chat"):
                args.append("--chat")
        else:
            args += ["--ids", ids_arg(case["prompt_ids"])]
        cv = case.get("control_vector")
        if cv:
            args += ["--control-vector", os.path.join(self.ref_dir, cv["file"]), f"--control-scale={cv['scale']}"]
        out, secs = prism(args, self.exe, self.backend)
        problems = []
        if out["prompt_ids"] != case["prompt_ids"]:
            problems.append(f"prompt_ids {out['prompt_ids']} != {case['prompt_ids']}")
        got = [t["id"] for t in out["tokens"]]
        if got != case["generated_ids"]:
            problems.append(f"ids {got} != {case['generated_ids']}")
        if out["stop_reason"] != case["stop_reason"]:
            problems.append(f"stop_reason {out['stop_reason']} != {case['stop_reason']}")
        dp = de = 0.0
        for g, r in zip(out["tokens"], case["tokens"]):
            dp = max(dp, abs(g["p"] - r["p"]))
            de = max(de, abs(g["entropy_bits"] - r["entropy_bits"]))
        if dp > TOL["p"]:
            problems.append(f"p off by {dp:.4f}")
        if de > TOL["entropy"]:
            problems.append(f"entropy off by {de:.4f} bits")
        n = len(got)
        self.report("generate", case["name"], problems, secs, f"{n} tok ({n / secs:.1f} tok/s) dp={dp:.1e} dH={de:.1e}")

    def patching(self, case):
        for site, grid in case["grids"].items():
            if self.tokenized:
                args = ["patch", self.model, "--clean", case["clean"], "--corrupt", case["corrupt"],
                        "--answer", case["answer"], "--wrong", case["wrong"]]
            else:
                args = ["patch", self.model, "--clean-ids", ids_arg(case["clean_ids"]),
                        "--corrupt-ids", ids_arg(case["corrupt_ids"]),
                        "--answer-id", str(case["answer_id"]), "--wrong-id", str(case["wrong_id"])]
            out, secs = prism(args + ["--site", site], self.exe, self.backend)
            problems = []
            if out["site"] != site:
                problems.append(f"site {out['site']}")
            for key in ("clean_metric", "corrupt_metric"):
                if abs(out[key] - case[key]) > TOL["metric"]:
                    problems.append(f"{key} {out[key]} != {case[key]}")
            if not same_shape(out["effect"], grid["effect"]):
                problems.append("effect grid has the wrong shape")
                d = float("inf")
            else:
                d = max_diff(out["effect"], grid["effect"])
                if d > TOL["effect"]:
                    problems.append(f"effect off by {d:.4f}")
            self.report("patch", f"{case['name']}/{site}", problems, secs, f"max |d effect| {d:.1e}")

    def ablation(self, case):
        for mode in ("zero", "mean"):
            args = ["ablate", self.model, "--mode", mode]
            args += ["--text", case["text"]] if self.tokenized else ["--ids", ids_arg(case["ids"])]
            out, secs = prism(args, self.exe, self.backend)
            problems = []
            if abs(out["baseline_bits"] - case["baseline_bits"]) > TOL["baseline_bits"]:
                problems.append(f"baseline {out['baseline_bits']} != {case['baseline_bits']}")
            ref = case[mode]["delta_bits"]
            if not same_shape(out["delta_bits"], ref):
                problems.append("delta_bits grid has the wrong shape")
                d = float("inf")
            else:
                d = max_diff(out["delta_bits"], ref)
                if d > TOL["delta_bits"]:
                    problems.append(f"delta_bits off by {d:.4f}")
            self.report("ablate", f"{mode}", problems, secs, f"max |d bits| {d:.1e}")

    def intervention(self, case):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(case["interventions"], f)
            path = f.name
        try:
            args = ["run", self.model, "--interventions", path]
            args += ["--text", case["text"]] if self.tokenized else ["--ids", ids_arg(case["ids"])]
            out, secs = prism(args, self.exe, self.backend)
        finally:
            os.unlink(path)
        problems = []
        ids = [t["id"] for t in out["tokens"]]
        if ids != case["ids"]:
            problems.append(f"ids {ids} != {case['ids']}")
        got = out["surprisal_bits"]
        if got[0] is not None or len(got) != len(case["surprisal_bits"]) + 1:
            problems.append("surprisal_bits must be [null, ...] with one entry per token")
            d = float("inf")
        else:
            d = max_diff(got[1:], case["surprisal_bits"])
            if d > TOL["surprisal"]:
                problems.append(f"surprisal off by {d:.4f} bits")
        self.report("interventions", case["name"], problems, secs, f"max |d bits| {d:.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("--prism", default="target/release/prism")
    ap.add_argument("--only", default="generation,patching,ablation,interventions")
    ap.add_argument("--backend", default="cpu")
    a = ap.parse_args()
    data = json.load(open(a.reference))
    ref_dir = os.path.dirname(os.path.abspath(a.reference))
    failures = 0
    for key, block in data["models"].items():
        c = Checker(block, ref_dir, a.prism, a.backend)
        for kind in a.only.split(","):
            for case in block.get(kind, []):
                try:
                    {"generation": c.generation, "patching": c.patching, "ablation": c.ablation,
                     "interventions": c.intervention}[kind](case)
                except Exception as e:  # a failing command is a failed case, not the end of the run
                    c.report(kind, case.get("name", "?"), [str(e)], 0.0)
        failures += c.failures
    print("all cases within tolerance" if failures == 0 else f"{failures} case(s) off")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
