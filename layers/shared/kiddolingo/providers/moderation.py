"""Our child-safety moderation policy: stricter per-category thresholds on the scores that the
moderation endpoint returns, on top of the endpoint's own ``flagged``.

The endpoint's thresholds are tuned for adults. A tutor for 6-12 year-olds flags far earlier;
anything sexual involving minors is flagged at the faintest signal. This module is pure (no SDK),
so the policy is testable on its own and readable in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CHILD_SAFETY_THRESHOLDS", "ModerationVerdict", "evaluate_moderation"]

#: category -> a score strictly above this flags the text. Ordered by severity (the first
#: flagged category becomes the verdict's reason).
CHILD_SAFETY_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {
        "sexual/minors": 0.01,
        "self-harm/instructions": 0.05,
        "self-harm/intent": 0.1,
        "self-harm": 0.1,
        "sexual": 0.1,
        "violence/graphic": 0.2,
        "hate/threatening": 0.2,
        "harassment/threatening": 0.2,
        "illicit/violent": 0.2,
        "hate": 0.3,
        "harassment": 0.3,
        "illicit": 0.3,
        "violence": 0.4,
    }
)


@dataclass(frozen=True)
class ModerationVerdict:
    """The outcome of one moderation check.

    ``categories`` lists the flagged categories, most severe first; ``reason`` is a short
    human-readable explanation (no user text in it, so it is safe to log and to put in
    ``response.done``'s ``status_details``).
    """

    flagged: bool
    categories: list[str] = field(default_factory=list)
    reason: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def clean(cls) -> ModerationVerdict:
        return cls(False, [], "")


def evaluate_moderation(
    category_scores: Mapping[str, float],
    *,
    api_flagged: bool = False,
    api_categories: Mapping[str, bool | None] | None = None,
    thresholds: Mapping[str, float] = CHILD_SAFETY_THRESHOLDS,
) -> ModerationVerdict:
    """Apply ``thresholds`` to the endpoint's ``category_scores`` (keys as the API names them,
    e.g. ``"self-harm/intent"``), together with the endpoint's own verdict."""
    ours: list[str] = []
    reasons: list[str] = []
    for category, limit in thresholds.items():
        score = category_scores.get(category)
        if score is not None and score > limit:
            ours.append(category)
            reasons.append(f"{category} {score:.3f} > {limit:g}")
    theirs = sorted(c for c, hit in (api_categories or {}).items() if hit and c not in ours)
    categories = ours + theirs
    flagged = bool(categories) or api_flagged
    if reasons:
        reason = "child-safety threshold: " + ", ".join(reasons)
    elif flagged:
        reason = "flagged by the moderation endpoint" + (f": {', '.join(theirs)}" if theirs else "")
    else:
        reason = ""
    return ModerationVerdict(flagged, categories, reason, dict(category_scores))
