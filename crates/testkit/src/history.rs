//! The history checker, the oracle of the cluster tests: given every node's events as read back
//! through the Axon API (token, event) and what the writers were told (acknowledged message ids,
//! and ids whose outcome they never learnt), it says whether the cluster kept its promises:
//!
//! - on each node, tokens follow each other without a gap from the node's first token;
//! - every node holds the same events at the same tokens (same first token, same length);
//! - per aggregate, sequence numbers are 0, 1, 2, ... in token order;
//! - every acknowledged id is present exactly once;
//! - an id whose outcome is unknown (the write failed or timed out, or its node was killed) is
//!   present at most once;
//! - an id whose write cannot have been stored (refused by the sequence check, or taken by a
//!   leader cut off from the majority) is absent;
//! - no id is present that no writer ever sent (and no event lacks an id).
//!
//! It knows nothing of gRPC or processes: the tests read the histories, this only judges them,
//! and lists every violation it finds (a few of each kind) so that one failure tells the story.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use myelin_proto::grpc::event::Event;

/// How many violations of each kind a failure lists before it only counts them.
const LISTED_PER_KIND: usize = 10;

/// What the writers know about the ids they sent.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    acknowledged: HashSet<String>,
    unknown: HashSet<String>,
    rejected: HashSet<String>,
}

impl Outcomes {
    pub fn new() -> Outcomes {
        Outcomes::default()
    }

    /// Ids of events whose transaction the server acknowledged: each must be present once.
    pub fn acknowledge<S: Into<String>>(&mut self, ids: impl IntoIterator<Item = S>) {
        self.acknowledged.extend(ids.into_iter().map(Into::into));
    }

    /// Ids of events whose transaction failed, timed out or was cut off: each may be present,
    /// at most once (an error after the proposal does not mean it was not stored).
    pub fn unknown<S: Into<String>>(&mut self, ids: impl IntoIterator<Item = S>) {
        self.unknown.extend(ids.into_iter().map(Into::into));
    }

    /// Ids of events whose write cannot have been stored: refused before it was proposed, or
    /// taken by a node that could not commit it. Each must be absent.
    pub fn reject<S: Into<String>>(&mut self, ids: impl IntoIterator<Item = S>) {
        self.rejected.extend(ids.into_iter().map(Into::into));
    }

    /// Adds another writer's outcomes to these.
    pub fn merge(&mut self, other: Outcomes) {
        self.acknowledged.extend(other.acknowledged);
        self.unknown.extend(other.unknown);
        self.rejected.extend(other.rejected);
    }

    /// The ids of unknown outcome (e.g. to [`reject`](Outcomes::reject) them when the test
    /// knows better).
    pub fn unknown_ids(&self) -> impl Iterator<Item = &String> {
        self.unknown.iter()
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    pub fn unknown_count(&self) -> usize {
        self.unknown.len()
    }

    pub fn rejected_count(&self) -> usize {
        self.rejected.len()
    }

    pub fn is_acknowledged(&self, id: &str) -> bool {
        self.acknowledged.contains(id)
    }

    /// Sent at all: acknowledged or of unknown outcome.
    fn was_sent(&self, id: &str) -> bool {
        self.acknowledged.contains(id) || self.unknown.contains(id)
    }
}

/// One node's history: its name (for messages) and its events in token order.
#[derive(Debug, Clone, Copy)]
pub struct NodeHistory<'a> {
    pub node: &'a str,
    pub events: &'a [(i64, Event)],
}

impl<'a> NodeHistory<'a> {
    pub fn new(node: &'a str, events: &'a [(i64, Event)]) -> NodeHistory<'a> {
        NodeHistory { node, events }
    }
}

/// What a passing check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events on every node.
    pub events: usize,
    /// The first token (`None` when the histories are empty).
    pub first_token: Option<i64>,
    pub aggregates: usize,
    pub acknowledged: usize,
    /// Ids of unknown outcome that were stored, and that were not.
    pub unknown_present: usize,
    pub unknown_absent: usize,
}

/// Every violation the check found, grouped by kind; its `Display` is the failure message.
#[derive(Debug, Clone, Default)]
pub struct Violations {
    kinds: BTreeMap<&'static str, Vec<String>>,
    nodes: usize,
    events: usize,
}

impl Violations {
    fn add(&mut self, kind: &'static str, message: String) {
        self.kinds.entry(kind).or_default().push(message);
    }

    fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The kinds of violation found ("gap", "divergence", ...), for tests of the checker.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count: usize = self.kinds.values().map(Vec::len).sum();
        writeln!(
            f,
            "the history check found {count} violation(s) over {} node(s) holding up to {} event(s):",
            self.nodes, self.events
        )?;
        for (kind, messages) in &self.kinds {
            writeln!(f, "  {kind} ({}):", messages.len())?;
            for message in messages.iter().take(LISTED_PER_KIND) {
                writeln!(f, "    - {message}")?;
            }
            if messages.len() > LISTED_PER_KIND {
                writeln!(f, "    - ... and {} more", messages.len() - LISTED_PER_KIND)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Checks `histories` (at least one) against `outcomes`; see the module's documentation.
pub fn check(histories: &[NodeHistory<'_>], outcomes: &Outcomes) -> Result<Summary, Violations> {
    let mut violations = Violations {
        nodes: histories.len(),
        events: histories.iter().map(|h| h.events.len()).max().unwrap_or(0),
        ..Violations::default()
    };
    let Some(reference) = histories.first() else {
        violations.add("no history", "the check was given no node's history".into());
        return Err(violations);
    };
    for history in histories {
        check_tokens(history, &mut violations);
    }
    // The content checks run on the reference and on every node that differs from it, so a
    // divergent node's own faults are named too, and identical nodes are not reported twice.
    let mut judged = vec![*reference];
    for history in &histories[1..] {
        if compare(reference, history, &mut violations) {
            judged.push(*history);
        }
    }
    let mut summary = None;
    for history in judged {
        let aggregates = check_sequences(&history, &mut violations);
        let (unknown_present, unknown_absent) = check_ids(&history, outcomes, &mut violations);
        summary.get_or_insert(Summary {
            events: history.events.len(),
            first_token: history.events.first().map(|(token, _)| *token),
            aggregates,
            acknowledged: outcomes.acknowledged_count(),
            unknown_present,
            unknown_absent,
        });
    }
    match summary {
        Some(summary) if violations.is_empty() => Ok(summary),
        _ => Err(violations),
    }
}

/// [`check`], panicking with the violations when there are any: for tests.
#[track_caller]
pub fn assert_histories(histories: &[NodeHistory<'_>], outcomes: &Outcomes) -> Summary {
    check(histories, outcomes).unwrap_or_else(|violations| panic!("{violations}"))
}

/// `id (aggregate #sequence)`, how messages name an event.
fn describe(event: &Event) -> String {
    if event.aggregate_identifier.is_empty() {
        format!("{:?} (no aggregate)", event.message_identifier)
    } else {
        format!(
            "{:?} ({} #{})",
            event.message_identifier, event.aggregate_identifier, event.aggregate_sequence_number
        )
    }
}

/// Tokens follow each other by one from the node's first token.
fn check_tokens(history: &NodeHistory<'_>, violations: &mut Violations) {
    let mut wrong = history
        .events
        .windows(2)
        .filter_map(|pair| match pair {
            [(before, _), (after, _)] if *after != before + 1 => Some((*before, *after)),
            _ => None,
        })
        .peekable();
    if let Some((before, after)) = wrong.next() {
        let more = wrong.count();
        let what = if after > before + 1 {
            format!("a gap: token {before} is followed by token {after}")
        } else {
            format!("token {before} is followed by token {after}, not {}", before + 1)
        };
        let and_more = if more > 0 {
            format!(" (and {more} more breaks)")
        } else {
            String::new()
        };
        violations.add("gap", format!("{}: {what}{and_more}", history.node));
    }
}

/// Whether `other` holds what `reference` holds; records the first difference. True when it
/// differs.
fn compare(reference: &NodeHistory<'_>, other: &NodeHistory<'_>, violations: &mut Violations) -> bool {
    let at = reference
        .events
        .iter()
        .zip(other.events)
        .position(|(mine, theirs)| mine != theirs);
    if let Some(at) = at {
        let (token, mine) = &reference.events[at];
        let (their_token, theirs) = &other.events[at];
        let what = if token != their_token {
            format!(
                "position {at} is token {token} on {}, token {their_token} on {}",
                reference.node, other.node
            )
        } else if mine.message_identifier == theirs.message_identifier {
            format!("the event {} differs in content", describe(mine))
        } else {
            format!(
                "{} has {}, {} has {}",
                reference.node,
                describe(mine),
                other.node,
                describe(theirs)
            )
        };
        violations.add(
            "divergence",
            format!(
                "{} diverges from {} at token {token}: {what}",
                other.node, reference.node
            ),
        );
        return true;
    }
    if reference.events.len() != other.events.len() {
        let last = |h: &NodeHistory<'_>| h.events.last().map_or("none".into(), |(t, _)| t.to_string());
        violations.add(
            "divergence",
            format!(
                "{} holds {} event(s) (last token {}), {} holds {} (last token {})",
                other.node,
                other.events.len(),
                last(other),
                reference.node,
                reference.events.len(),
                last(reference)
            ),
        );
        return true;
    }
    false
}

/// Each aggregate's sequence numbers are 0, 1, 2, ... in token order; answers how many
/// aggregates there are.
fn check_sequences(history: &NodeHistory<'_>, violations: &mut Violations) -> usize {
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (token, event) in history.events {
        if event.aggregate_identifier.is_empty() {
            continue;
        }
        let expected = next.entry(event.aggregate_identifier.as_str()).or_insert(0);
        if event.aggregate_sequence_number != *expected {
            violations.add(
                "aggregate sequence",
                format!(
                    "{}: token {token} holds {}, expected sequence {expected}",
                    history.node,
                    describe(event)
                ),
            );
        }
        // Go on from what is there, so that one fault is reported once.
        *expected = event.aggregate_sequence_number + 1;
    }
    next.len()
}

/// Acknowledged ids once, unknown ones at most once, nothing unsent; answers how many unknown
/// ids are present and absent.
fn check_ids(history: &NodeHistory<'_>, outcomes: &Outcomes, violations: &mut Violations) -> (usize, usize) {
    let mut tokens: HashMap<&str, Vec<i64>> = HashMap::new();
    for (token, event) in history.events {
        let id = event.message_identifier.as_str();
        if id.is_empty() {
            violations.add(
                "never sent",
                format!("{}: token {token} holds an event without a message id", history.node),
            );
            continue;
        }
        if outcomes.rejected.contains(id) {
            violations.add(
                "rejected but stored",
                format!(
                    "{}: token {token} holds {}, whose write cannot have been stored",
                    history.node,
                    describe(event)
                ),
            );
        } else if !outcomes.was_sent(id) {
            violations.add(
                "never sent",
                format!(
                    "{}: token {token} holds {}, which no writer sent",
                    history.node,
                    describe(event)
                ),
            );
        }
        tokens.entry(id).or_default().push(*token);
    }
    let mut repeated: Vec<_> = tokens.iter().filter(|(_, at)| at.len() > 1).collect();
    repeated.sort_by_key(|(_, at)| at[0]);
    for (id, at) in repeated {
        violations.add(
            "duplicate",
            format!(
                "{}: {id:?} is stored {} times, at tokens {at:?}",
                history.node,
                at.len()
            ),
        );
    }
    let mut lost: Vec<&String> = outcomes
        .acknowledged
        .iter()
        .filter(|id| !tokens.contains_key(id.as_str()))
        .collect();
    lost.sort();
    for id in lost {
        violations.add(
            "acknowledged but missing",
            format!("{}: the acknowledged {id:?} is not stored", history.node),
        );
    }
    let unknown_present = outcomes
        .unknown
        .iter()
        .filter(|id| !outcomes.acknowledged.contains(*id) && tokens.contains_key(id.as_str()))
        .count();
    let unknown = outcomes
        .unknown
        .iter()
        .filter(|id| !outcomes.acknowledged.contains(*id))
        .count();
    (unknown_present, unknown - unknown_present)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::aggregate_event;

    /// Events of aggregates `a` and `b` interleaved, tokens from 0: a-0, b-0, a-1, b-1, ...
    fn good(count: usize) -> Vec<(i64, Event)> {
        (0..count)
            .map(|i| {
                let aggregate = if i % 2 == 0 { "a" } else { "b" };
                (i as i64, aggregate_event(aggregate, (i / 2) as i64).build())
            })
            .collect()
    }

    fn all_acknowledged(events: &[(i64, Event)]) -> Outcomes {
        let mut outcomes = Outcomes::new();
        outcomes.acknowledge(events.iter().map(|(_, e)| e.message_identifier.clone()));
        outcomes
    }

    fn run(histories: &[&[(i64, Event)]], outcomes: &Outcomes) -> Result<Summary, Violations> {
        let names: Vec<String> = (1..=histories.len()).map(|i| format!("node-{i}")).collect();
        let histories: Vec<NodeHistory<'_>> = histories
            .iter()
            .zip(&names)
            .map(|(events, name)| NodeHistory::new(name, events))
            .collect();
        check(&histories, outcomes)
    }

    #[track_caller]
    fn fails_with(result: Result<Summary, Violations>, kind: &str, words: &str) {
        let violations = result.expect_err("the check fails");
        assert!(
            violations.kinds().contains(&kind),
            "kinds {:?}:\n{violations}",
            violations.kinds()
        );
        let text = violations.to_string();
        assert!(text.contains(words), "{words:?} is not in:\n{text}");
    }

    #[test]
    fn identical_gapless_histories_with_every_acknowledgement_pass() {
        let events = good(6);
        let summary = run(&[&events, &events, &events], &all_acknowledged(&events)).expect("passes");
        assert_eq!(
            summary,
            Summary {
                events: 6,
                first_token: Some(0),
                aggregates: 2,
                acknowledged: 6,
                unknown_present: 0,
                unknown_absent: 0,
            }
        );
    }

    #[test]
    fn histories_may_start_at_any_token_but_must_go_on_by_one() {
        let events: Vec<_> = good(4).into_iter().map(|(t, e)| (t + 100, e)).collect();
        assert_eq!(
            run(&[&events], &all_acknowledged(&events)).expect("passes").first_token,
            Some(100)
        );
    }

    #[test]
    fn a_gap_in_the_tokens_fails_the_check() {
        let mut events = good(6);
        for (token, _) in &mut events[3..] {
            *token += 1;
        }
        fails_with(
            run(&[&events], &all_acknowledged(&events)),
            "gap",
            "node-1: a gap: token 2 is followed by token 4",
        );
    }

    #[test]
    fn a_token_served_twice_fails_the_check() {
        let mut events = good(4);
        events[2].0 = 1;
        fails_with(
            run(&[&events], &all_acknowledged(&events)),
            "gap",
            "token 1 is followed by token 1, not 2",
        );
    }

    #[test]
    fn an_event_stored_twice_fails_the_check() {
        let mut events = good(4);
        let again = events[1].1.clone();
        events.push((4, again));
        let outcomes = all_acknowledged(&events);
        fails_with(
            run(&[&events, &events], &outcomes),
            "duplicate",
            "node-1: \"b-0\" is stored 2 times, at tokens [1, 4]",
        );
    }

    #[test]
    fn an_unknown_outcome_stored_twice_fails_the_check() {
        let mut events = good(2);
        events.push((2, aggregate_event("c", 0).build()));
        events.push((3, aggregate_event("c", 1).message_id("c-0").build()));
        let mut outcomes = all_acknowledged(&good(2));
        outcomes.unknown(["c-0"]);
        fails_with(run(&[&events], &outcomes), "duplicate", "\"c-0\" is stored 2 times");
    }

    #[test]
    fn a_lost_acknowledgement_fails_the_check() {
        let events = good(5);
        let outcomes = all_acknowledged(&events);
        let kept = &events[..4];
        fails_with(
            run(&[kept, kept], &outcomes),
            "acknowledged but missing",
            "node-1: the acknowledged \"a-2\" is not stored",
        );
    }

    #[test]
    fn a_node_holding_other_events_fails_the_check() {
        let events = good(4);
        let mut other = events.clone();
        other[2].1 = aggregate_event("a", 1).message_id("stranger").build();
        let mut outcomes = all_acknowledged(&events);
        outcomes.unknown(["stranger"]);
        let result = run(&[&events, &events, &other], &outcomes);
        fails_with(
            result.clone(),
            "divergence",
            "node-3 diverges from node-1 at token 2: node-1 has \"a-1\" (a #1), node-3 has \"stranger\" (a #1)",
        );
        // The divergent node's own faults are named too: it lost an acknowledged event.
        fails_with(
            result,
            "acknowledged but missing",
            "node-3: the acknowledged \"a-1\" is not stored",
        );
    }

    #[test]
    fn a_node_that_has_not_caught_up_fails_the_check() {
        let events = good(4);
        fails_with(
            run(&[&events, &events[..3]], &all_acknowledged(&events[..3])),
            "divergence",
            "node-2 holds 3 event(s) (last token 2), node-1 holds 4 (last token 3)",
        );
    }

    #[test]
    fn an_event_whose_content_differs_between_nodes_fails_the_check() {
        let events = good(3);
        let mut other = events.clone();
        other[1].1.timestamp += 1;
        fails_with(
            run(&[&events, &other], &all_acknowledged(&events)),
            "divergence",
            "the event \"b-0\" (b #0) differs in content",
        );
    }

    #[test]
    fn an_aggregate_sequence_that_skips_fails_the_check() {
        let mut events = good(4);
        events.push((4, aggregate_event("a", 3).build()));
        fails_with(
            run(&[&events], &all_acknowledged(&events)),
            "aggregate sequence",
            "node-1: token 4 holds \"a-3\" (a #3), expected sequence 2",
        );
    }

    #[test]
    fn an_event_no_writer_sent_fails_the_check() {
        let events = good(3);
        let outcomes = all_acknowledged(&events[..2]);
        fails_with(
            run(&[&events], &outcomes),
            "never sent",
            "node-1: token 2 holds \"a-1\" (a #1), which no writer sent",
        );
    }

    #[test]
    fn a_rejected_write_that_is_stored_fails_the_check() {
        let events = good(3);
        let mut outcomes = all_acknowledged(&events[..2]);
        outcomes.reject(["a-1"]);
        fails_with(
            run(&[&events], &outcomes),
            "rejected but stored",
            "node-1: token 2 holds \"a-1\" (a #1), whose write cannot have been stored",
        );
    }

    #[test]
    fn unknown_outcomes_may_be_stored_once_or_not_at_all() {
        let events = good(4);
        let mut outcomes = all_acknowledged(&events[..3]);
        outcomes.unknown(["b-1", "b-2"]);
        let summary = run(&[&events, &events], &outcomes).expect("passes");
        assert_eq!((summary.unknown_present, summary.unknown_absent), (1, 1));
    }

    #[test]
    fn a_failure_lists_every_kind_of_violation_it_found() {
        let mut events = good(4);
        events[3].0 = 7;
        let mut outcomes = all_acknowledged(&events);
        outcomes.acknowledge(["lost"]);
        let violations = run(&[&events], &outcomes).expect_err("fails");
        assert_eq!(violations.kinds(), ["acknowledged but missing", "gap"]);
        let text = violations.to_string();
        assert!(
            text.starts_with("the history check found 2 violation(s) over 1 node(s)"),
            "{text}"
        );
    }
}
