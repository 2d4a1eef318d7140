"""The deployment stages' bodies: plain functions of what they need (the target, their inputs) that return
their outputs. ``deploycheck.deployment.Deployment`` runs them in order and owns what they leave behind."""

from __future__ import annotations


class StageNotApplicable(Exception):
    """The stage has nothing to do for this stack (plain PostgreSQL has no Citus cluster, a stack without a
    proxy no proxy): it passes, and says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = f"not applicable: {reason}"


class StageFailed(Exception):
    """A stage could not do its job: ``reason`` is one line, ``evidence`` what a person needs to see why."""

    def __init__(self, reason: str, evidence: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence
