"""Hypothesis strategies for trie workloads: keys sharing long prefixes, tiny and large values."""

from __future__ import annotations

from hypothesis import strategies as st


def _crafted_key(shared: int, tail: str) -> bytes:
    return bytes.fromhex(("0" * shared + tail)[:64].ljust(64, "0"))


# Random keys, and keys that share 40-64 leading nibbles (deep extensions, tiny inline subtrees).
trie_keys = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(_crafted_key, st.integers(min_value=40, max_value=64), st.text("01f", max_size=24)),
)

# b"" deletes; 1-3 byte values make leaves deep in the trie shorter than 32 bytes (embedded nodes).
trie_values = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=3),
    st.binary(min_size=28, max_size=40),
)

# A pool of keys and a list of batches over it, so batches update and delete earlier keys.
workloads = st.lists(trie_keys, min_size=1, max_size=24, unique=True).flatmap(
    lambda pool: st.tuples(
        st.just(pool),
        st.lists(
            st.dictionaries(st.sampled_from(pool), trie_values, max_size=len(pool)),
            min_size=1,
            max_size=6,
        ),
    )
)
