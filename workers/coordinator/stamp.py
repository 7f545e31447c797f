"""What every commit writes into ``NS:state`` besides the batch itself (DESIGN §5).

Who commits it (epoch, leader, wall time) always; the complete policy state and its
summary whenever the state changed. With 1,000 observers the state is ~0.5 MB, so only
the observer runs the policy changed are encoded again (:class:`StateEncoder`) and each
region's verdict is recounted from those runs only (``Policy.verdicts``).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from schemas.state import RegionState
from streams.commit import Batch
from streams.keys import StateField
from workers.policy.encoder import StateEncoder
from workers.policy.rules import Policy

_summary_encoder = msgspec.json.Encoder()


class StateStamp:
    """Stamps one term's batches for :class:`~workers.coordinator.pipeline.LeaderPipeline`."""

    def __init__(self, epoch: int, owner: str, clock: Callable[[], float]) -> None:
        self._epoch = b"%d" % epoch
        self._owner = owner.encode()
        self._clock = clock
        self._encoder = StateEncoder()
        self._state: bytes | None = None
        self.verdicts: dict[str, tuple[RegionState, str | None]] = {}
        """Each region's state and down reason in the state last stamped."""

    @property
    def size(self) -> int:
        """Bytes of the policy state last stamped (0 before the first)."""
        return len(self._state or b"")

    def stamp(self, batch: Batch, policy: Policy) -> None:
        """Stamp ``batch`` with who commits it, and the policy state if it changed."""
        batch.state[StateField.EPOCH] = self._epoch
        batch.state[StateField.LEADER] = self._owner
        batch.state[StateField.UPDATED_AT] = repr(self._clock()).encode()
        changed = policy.take_run_changes()
        state = self._encoder.encode(policy.state, changed)
        self.verdicts = policy.verdicts(changed)
        if state != self._state:
            self._state = state
            batch.state[StateField.POLICY] = state
            summary = policy.summary(self.verdicts)
            batch.state[StateField.SUMMARY] = _summary_encoder.encode(summary)
