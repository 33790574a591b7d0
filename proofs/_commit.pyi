"""Types of the native commit pass (proofs/_commit.c); see proofs.engine for how it is used."""

from collections.abc import Callable
from typing import Any

def configure(
    blank: bytes,
    invalid_key_error: type[Exception],
    invalid_value_error: type[Exception],
    corrupt_node_error: type[Exception],
) -> None: ...
def commit_pass(
    nodes: dict[bytes, tuple[Any, ...]],
    load: Callable[[bytes], tuple[Any, ...]],
    root_ref: bytes,
    dirty: dict[bytes, bytes],
    version: int,
) -> tuple[bytes, list[bytes], list[bytes], list[bytes], list[tuple[Any, ...]], list[bytes], int]: ...
def update_cache(
    nodes: dict[bytes, tuple[Any, ...]],
    dropped: list[bytes],
    refs: list[bytes],
    created_nodes: list[tuple[Any, ...]],
) -> None: ...
def update_tracked_cache(
    nodes: dict[bytes, tuple[Any, ...]],
    extra: dict[bytes, int],
    deaths: list[tuple[bytes, int, int]],
    dropped: list[bytes],
    refs: list[bytes],
    created_nodes: list[tuple[Any, ...]],
    version: int,
) -> None: ...
def keccak256(data: bytes) -> bytes: ...
def keccak256_generic(data: bytes) -> bytes: ...
def merkle_root(items: list[bytes], hashed: bool) -> bytes: ...
def rlp_decode(data: bytes, max_depth: int) -> bytes | list[Any]: ...
