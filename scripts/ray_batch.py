#!/usr/bin/env python3
"""A corpus through Prism on a Ray cluster: the folder `prism batch` writes, made by many machines.

    python scripts/ray_batch.py MODEL --corpus PATH --out DIR [--context N] [--top K]
        [--shard-docs N] [--bos] [--pack] [--sites resid_post@12,...] [--dtype f32|f16]
        [--sae DIR] [--backend cpu|gpu] [--workers N] [--cpus-per-worker C] [--address auto]

Ray Data does the scheduling. The corpus is read by Prism (so its documents, their order and the
digest are those `prism batch` sees) and becomes a dataset of shards, one row per shard still to
make (index, first document, texts). `map_batches` sends those rows to a pool of actors, each
holding one Prism model (`prism.load`, loaded once per worker) that turns a shard's documents into
its files (Parquet, and the activation cache's Arrow rows with --sites) with `Model.batch_shard`, the code `prism batch` runs. The driver commits
finished shards in order into the folder (`prism.Batch.commit`: files written atomically, the
manifest with each shard's sha256 updated), so the folder is always one `prism batch` could have
written, `prism batch --summary` and the app's Corpus view read it, and a killed pipeline resumes
at the first missing shard (by this script or by `prism batch` itself), refusing a changed model,
corpus or setting.

On a cluster, MODEL must be readable by every worker (a shared path) and DIR by the driver; the
corpus is read by the driver only. Without --address, `ray.init()` starts a local cluster.
Requires the `prism` Python package (see the README) and `ray[data]`.
"""

import argparse
import sys
import time

import numpy as np
import ray

import prism


class ShardMaker:
    """A Ray actor: one Prism model, shards of documents in, their Parquet files out."""

    def __init__(self, model, backend, sae, **settings):
        self.model = prism.load(model, backend=backend)
        self.settings = dict(settings, sae=prism.load_sae(sae) if sae else None)

    def __call__(self, batch):
        out = {k: [] for k in ["index", *BYTES, *COUNTS]}
        for index, first, texts in zip(batch["index"], batch["first_doc"], batch["texts"]):
            shard = self.model.batch_shard([str(t) for t in texts], int(first), **self.settings)
            out["index"].append(int(index))
            for key in BYTES:
                # No activations or features: empty bytes (Ray's columns take no None).
                out[key].append(shard[key] or b"")
            for key in COUNTS:
                out[key].append(shard[key])
        cols = {k: np.array(out[k], dtype=object) for k in BYTES}
        cols.update({k: np.array(out[k], dtype=np.int64) for k in ["index", *COUNTS]})
        return cols


BYTES = ["tokens_parquet", "docs_parquet", "activations", "features_parquet"]
COUNTS = ["tokens", "docs", "activation_rows"]


def run(args) -> int:
    # The driver's model is only for the manifest (hash, context, tokenizer check): mapped, cheap.
    model = prism.load(args.model, backend=args.backend)
    settings = dict(
        context=args.context, top=args.top, bos=args.bos, pack=args.pack, sites=args.sites,
        dtype=args.dtype,
    )
    sae = prism.load_sae(args.sae) if args.sae else None
    batch = prism.Batch(
        model, args.corpus, args.out, shard_docs=args.shard_docs, sae=sae, **settings
    )
    pending = batch.pending()
    print(f"{batch.shards} shards, {batch.done} done, {len(pending)} to make", file=sys.stderr)
    if not pending:
        return 0
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.workers * args.cpus_per_worker)
    rows = [{"index": i, "first_doc": first, "texts": texts} for i, first, texts in pending]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ShardMaker,
        fn_constructor_kwargs=dict(
            model=args.model, backend=args.backend, sae=args.sae, **settings
        ),
        batch_size=1,
        concurrency=args.workers,
        num_cpus=args.cpus_per_worker,
        num_gpus=1 if args.backend == "gpu" else 0,
    )
    # Shards finish in any order; the folder takes them in order.
    waiting, tokens, start = {}, 0, time.time()
    for row in ds.iter_rows():
        waiting[int(row["index"])] = row
        while batch.done in waiting:
            r = waiting.pop(batch.done)
            shard = {k: (r[k] or None) for k in BYTES}
            shard.update({k: int(r[k]) for k in COUNTS})
            batch.commit(batch.done, shard)
            tokens += shard["tokens"]
            rate = tokens / max(time.time() - start, 1e-9)
            print(f"shard {batch.done}/{batch.shards} committed, {rate:.1f} tokens/s", file=sys.stderr)
    ray.shutdown()
    if batch.done != batch.shards:
        print(f"only {batch.done} of {batch.shards} shards were made", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--shard-docs", type=int, default=256)
    p.add_argument("--bos", action="store_true")
    p.add_argument("--pack", action="store_true", help="documents packed into windows")
    p.add_argument("--sites", help="activation cache sites, e.g. resid_post@12 (needs --pack)")
    p.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    p.add_argument("--sae", help="a SAELens SAE folder: sparse features in the shards")
    p.add_argument("--backend", default="cpu", choices=["cpu", "gpu", "auto"])
    p.add_argument("--workers", type=int, default=2, help="actors, each with one model")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--address", help="a running cluster (ray://..., or auto); default: a local one")
    args = p.parse_args()
    try:
        return run(args)
    except prism.PrismError as e:
        print(f"ray_batch: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
