"""Sequencer errors, classified by what the caller should do (as op-node classifies them).

- ``TemporaryError``: retry the same step later (the EVM chain is unreachable, a transaction is
  not mined yet). The sequencer keeps producing unsafe blocks meanwhile.
- ``ResetError``: the view of the EVM chain moved under us (a reorg of an external chain, a batch
  the bridge did not take): rebuild the stage from the last known-good point and go on.
- ``CriticalError``: the node's data contradicts the EVM chain or itself; stop, loudly, rather
  than commit something wrong.
"""

from __future__ import annotations


class SequencerError(Exception):
    """Base of the sequencer's own errors."""


class TemporaryError(SequencerError):
    """Retry later."""


class ResetError(SequencerError):
    """Reset the stage and go on."""


class CriticalError(SequencerError):
    """Stop the sequencer."""
