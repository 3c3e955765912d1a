"""The public :class:`~deploysignal.split.Family` protocol holds only what any family can implement: a
third-party family without the compiled step's private evidence hook is still a ``Family``, and the
built-in families are too."""

from __future__ import annotations

from typing import Any

from deploysignal.split import Family, FamilyEvidence, FamilyStep, MetricSpec, SplitGate, SplitSettings


class _ThirdParty:
    """A family written against the documented protocol only."""

    name = "custom"
    role = "rollback"

    def step(self, data: Any) -> FamilyStep:
        raise NotImplementedError

    def evidence(self) -> FamilyEvidence:
        raise NotImplementedError

    def explain(self) -> str:
        return "custom"

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def test_a_family_without_the_private_hook_is_a_family():
    assert isinstance(_ThirdParty(), Family)
    gate = SplitGate([MetricSpec("errors", "event", "up")], SplitSettings(canary_share=0.1))
    assert all(isinstance(f, Family) for f in gate.families) and len(gate.families) == 2
