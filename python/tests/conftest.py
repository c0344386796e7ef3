"""Shared helpers: the repository, the `prism` binary the numbers are compared with, the models."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def prism_bin() -> Path:
    """The CLI built from this checkout (`cargo build --release`), or $PRISM_BIN."""
    if os.environ.get("PRISM_BIN"):
        return Path(os.environ["PRISM_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "prism"


def cli(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(prism_bin()), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"prism {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p


def cli_json(*args):
    return json.loads(cli(*args).stdout)


@pytest.fixture(scope="session")
def smollm2():
    import prism

    return prism.load("smollm2", backend="cpu")


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not prism_bin().exists():
        pytest.exit(f"{prism_bin()} is missing: run `cargo build --release --workspace` first", 2)
