"""The history checker of the cluster tests, as crates/testkit/src/history.rs has it for Rust.

Given every node's history ((token, AxonEvent) in token order) and what the writers were told —
acknowledged message ids, and ids whose outcome they never learnt — it checks:

- on each node, tokens follow each other without a gap from the node's first token;
- every node holds the same events at the same tokens;
- per aggregate, sequence numbers are 0, 1, 2, ... in token order;
- every acknowledged id is present exactly once;
- an id of unknown outcome (the write failed or timed out, or its node was killed) at most once;
- an id whose write cannot have been stored (refused by the sequence check) is absent;
- no id is present that no writer sent (and no event lacks an id).

``check`` returns every violation found, grouped by kind; ``assert_histories`` fails with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from axonclient.client import AxonEvent

# How many violations of each kind a failure lists before it only counts them.
LISTED_PER_KIND = 10

History = Sequence[tuple[int, AxonEvent]]


@dataclass
class Outcomes:
    acknowledged: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)

    def merge(self, other: Outcomes) -> None:
        self.acknowledged |= other.acknowledged
        self.unknown |= other.unknown
        self.rejected |= other.rejected


@dataclass
class Summary:
    events: int
    first_token: int | None
    aggregates: int
    acknowledged: int
    unknown_present: int
    unknown_absent: int


def _describe(event: AxonEvent) -> str:
    if not event.aggregate_identifier:
        return f"{event.message_identifier!r} (no aggregate)"
    return f"{event.message_identifier!r} ({event.aggregate_identifier} #{event.aggregate_sequence_number})"


def check(histories: Sequence[tuple[str, History]], outcomes: Outcomes) -> tuple[Summary | None, dict[str, list[str]]]:
    """(summary, violations by kind); the summary is None when there are violations."""
    violations: dict[str, list[str]] = defaultdict(list)
    if not histories:
        violations["no history"].append("the check was given no node's history")
        return None, violations

    for node, events in histories:
        breaks = [(a, b) for (a, _), (b, _) in zip(events, events[1:]) if b != a + 1]
        if breaks:
            a, b = breaks[0]
            what = f"a gap: token {a} is followed by token {b}" if b > a + 1 else f"token {a} is followed by token {b}, not {a + 1}"
            more = f" (and {len(breaks) - 1} more breaks)" if len(breaks) > 1 else ""
            violations["gap"].append(f"{node}: {what}{more}")

    reference_node, reference = histories[0]
    judged = [(reference_node, reference)]
    for node, events in histories[1:]:
        differs = False
        for position, ((token, mine), (their_token, theirs)) in enumerate(zip(reference, events)):
            if token != their_token or mine != theirs:
                if token != their_token:
                    what = f"position {position} is token {token} on {reference_node}, token {their_token} on {node}"
                elif mine.message_identifier == theirs.message_identifier:
                    what = f"the event {_describe(mine)} differs in content"
                else:
                    what = f"{reference_node} has {_describe(mine)}, {node} has {_describe(theirs)}"
                violations["divergence"].append(f"{node} diverges from {reference_node} at token {token}: {what}")
                differs = True
                break
        if not differs and len(events) != len(reference):
            last = lambda h: h[-1][0] if h else "none"  # noqa: E731
            violations["divergence"].append(
                f"{node} holds {len(events)} event(s) (last token {last(events)}), "
                f"{reference_node} holds {len(reference)} (last token {last(reference)})"
            )
            differs = True
        if differs:
            judged.append((node, events))

    summary = None
    for node, events in judged:
        following: dict[str, int] = {}
        for token, event in events:
            aggregate = event.aggregate_identifier
            if not aggregate:
                continue
            expected = following.get(aggregate, 0)
            if event.aggregate_sequence_number != expected:
                violations["aggregate sequence"].append(
                    f"{node}: token {token} holds {_describe(event)}, expected sequence {expected}"
                )
            following[aggregate] = event.aggregate_sequence_number + 1

        at: dict[str, list[int]] = defaultdict(list)
        for token, event in events:
            message_id = event.message_identifier
            if not message_id:
                violations["never sent"].append(f"{node}: token {token} holds an event without a message id")
                continue
            if message_id in outcomes.rejected:
                violations["rejected but stored"].append(
                    f"{node}: token {token} holds {_describe(event)}, whose write cannot have been stored"
                )
            elif message_id not in outcomes.acknowledged and message_id not in outcomes.unknown:
                violations["never sent"].append(f"{node}: token {token} holds {_describe(event)}, which no writer sent")
            at[message_id].append(token)
        for message_id, tokens in sorted(at.items(), key=lambda item: item[1][0]):
            if len(tokens) > 1:
                violations["duplicate"].append(f"{node}: {message_id!r} is stored {len(tokens)} times, at tokens {tokens}")
        for message_id in sorted(outcomes.acknowledged - at.keys()):
            violations["acknowledged but missing"].append(f"{node}: the acknowledged {message_id!r} is not stored")
        unknown = outcomes.unknown - outcomes.acknowledged
        present = len(unknown & at.keys())
        if summary is None:
            summary = Summary(
                events=len(events),
                first_token=events[0][0] if events else None,
                aggregates=len(following),
                acknowledged=len(outcomes.acknowledged),
                unknown_present=present,
                unknown_absent=len(unknown) - present,
            )
    return (None if violations else summary), violations


def describe(violations: dict[str, list[str]], nodes: int, events: int) -> str:
    count = sum(len(messages) for messages in violations.values())
    lines = [f"the history check found {count} violation(s) over {nodes} node(s) holding up to {events} event(s):"]
    for kind in sorted(violations):
        messages = violations[kind]
        lines.append(f"  {kind} ({len(messages)}):")
        lines.extend(f"    - {message}" for message in messages[:LISTED_PER_KIND])
        if len(messages) > LISTED_PER_KIND:
            lines.append(f"    - ... and {len(messages) - LISTED_PER_KIND} more")
    return "\n".join(lines)


def assert_histories(histories: Sequence[tuple[str, History]], outcomes: Outcomes) -> Summary:
    summary, violations = check(histories, outcomes)
    if violations:
        raise AssertionError(describe(violations, len(histories), max((len(h) for _, h in histories), default=0)))
    assert summary is not None
    return summary
