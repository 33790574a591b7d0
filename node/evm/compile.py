"""Compile the Vyper contracts into committed JSON artifacts, and load those artifacts.

`python -m node.evm.compile` regenerates `node/evm/contracts/build/<Name>.json` from every
`node/evm/contracts/*.vy` with the pinned vyper 0.4.3. Everything else in the node reads the
artifacts through `load_artifact(name)` and never needs the compiler at run time.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"
COMPILER_VERSION = "0.4.3"
# Prague rules, as the embedded chain runs; the code uses Cancun's TSTORE/TLOAD (reentrancy locks)
# and MCOPY, so an external EVM chain must be at least Cancun.
EVM_VERSION = "prague"


class ArtifactError(Exception):
    """An artifact is missing, malformed, or was built by another compiler."""


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI, creation bytecode and runtime bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    runtime_bytecode: bytes
    source_hash: str
    compiler: str
    evm_version: str = EVM_VERSION

    def to_json(self) -> dict[str, Any]:
        """The artifact's JSON form, as written to build/<Name>.json."""
        return {
            "contractName": self.name,
            "compiler": self.compiler,
            "evmVersion": self.evm_version,
            "sourceHash": self.source_hash,
            "abi": self.abi,
            "bytecode": "0x" + self.bytecode.hex(),
            "runtimeBytecode": "0x" + self.runtime_bytecode.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        """Parse an artifact's JSON form; raises ArtifactError if a field is missing or malformed."""
        try:
            return cls(
                name=str(data["contractName"]),
                abi=list(data["abi"]),
                bytecode=bytes.fromhex(str(data["bytecode"]).removeprefix("0x")),
                runtime_bytecode=bytes.fromhex(str(data["runtimeBytecode"]).removeprefix("0x")),
                source_hash=str(data["sourceHash"]),
                compiler=str(data["compiler"]),
                evm_version=str(data.get("evmVersion", EVM_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"malformed artifact: {exc}") from exc


def contract_names() -> list[str]:
    """Names of every contract source (`<Name>.vy`) in node/evm/contracts, sorted."""
    return sorted(path.stem for path in CONTRACTS_DIR.glob("*.vy"))


def source_hash(source: str) -> str:
    """The sha256 (hex) of a contract source, recorded in its artifact."""
    return hashlib.sha256(source.encode()).hexdigest()


def compile_contract(name: str) -> Artifact:
    """Compile `contracts/<name>.vy` with vyper; raises ArtifactError on a compiler mismatch."""
    import vyper
    from vyper.compiler.settings import Settings

    if not vyper.__version__.startswith(COMPILER_VERSION):
        raise ArtifactError(f"vyper {COMPILER_VERSION} required, found {vyper.__version__}")
    path = CONTRACTS_DIR / f"{name}.vy"
    source = path.read_text()
    out = vyper.compile_code(
        source,
        contract_path=path.name,
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return Artifact(
        name=name,
        abi=out["abi"],
        bytecode=bytes.fromhex(out["bytecode"].removeprefix("0x")),
        runtime_bytecode=bytes.fromhex(out["bytecode_runtime"].removeprefix("0x")),
        source_hash=source_hash(source),
        compiler=f"vyper {COMPILER_VERSION}",
    )


def artifact_path(name: str) -> Path:
    """Where the artifact of contract `name` is committed."""
    return BUILD_DIR / f"{name}.json"


def write_artifact(artifact: Artifact) -> Path:
    """Write `artifact` to build/<Name>.json (stable key order and formatting); returns the path."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    path = artifact_path(artifact.name)
    path.write_text(json.dumps(artifact.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def compile_all() -> list[Path]:
    """Compile every contract source and rewrite its artifact; returns the written paths."""
    return [write_artifact(compile_contract(name)) for name in contract_names()]


@cache
def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract `name` (e.g. "Bridge"); raises ArtifactError if absent."""
    path = artifact_path(name)
    if not path.is_file():
        raise ArtifactError(f"no artifact for {name!r} at {path}; run `python -m node.evm.compile`")
    return Artifact.from_json(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m node.evm.compile`: regenerate every artifact."""
    for path in compile_all():
        print(f"wrote {path.relative_to(CONTRACTS_DIR.parent.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
