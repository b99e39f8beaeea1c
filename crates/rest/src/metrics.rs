//! `/actuator/prometheus`: the Prometheus text format (version 0.0.4) of every context's store
//! counters, plus the seconds since each context's last backup request and the live backup
//! leases.
//!
//! Names follow Prometheus conventions (`_total` counters, base units: seconds and bytes) and
//! carry `context` and `family` (`events` / `snapshots`) labels. A context never backed up
//! reports `+Inf` seconds since its last backup, so `> 86400` alerts fire for it too.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use myelin_store::{FamilyMetrics, HistogramSnapshot};

use crate::SharedState;
use crate::error::{RestError, blocking};
use myelin_control::now_ms;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/actuator/prometheus",
    tag = "status",
    responses((status = OK, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
pub async fn prometheus(State(state): State<SharedState>) -> Result<impl IntoResponse, RestError> {
    let names = state.node.contexts().names();
    let control = state.node.control().clone();
    let lookup = names.clone();
    let last_backups = blocking(move || {
        lookup
            .iter()
            .map(|name| Ok(control.last_backup_ms(name)?))
            .collect::<Result<Vec<_>, RestError>>()
    })
    .await?;
    let mut families = Vec::new();
    let mut streams = Vec::new();
    for name in &names {
        if let Some(context) = state.node.contexts().get(name) {
            let metrics = context.store().metrics();
            families.push((name.clone(), "events", metrics.events));
            families.push((name.clone(), "snapshots", metrics.snapshots));
            streams.push((name.clone(), context.tracking_streams()));
        }
    }
    let now = now_ms();
    let backups: Vec<(String, f64)> = names
        .iter()
        .zip(last_backups)
        .map(|(name, last)| {
            let age = last.map_or(f64::INFINITY, |ms| (now.saturating_sub(ms)).max(0) as f64 / 1000.0);
            (name.clone(), age)
        })
        .collect();
    let leases = state.deletion_holds.live(std::time::Instant::now()).len();
    let mut body = render(&families, &streams, &backups, leases);
    if let Ok(cluster) = state.node.cluster() {
        render_raft(&mut body, &cluster.status());
    }
    if let Some(routing) = &state.routing {
        render_routing(&mut body, routing);
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

/// A metric's name, help text, and how to read it from a family's metrics.
type Metric<T> = (&'static str, &'static str, fn(&FamilyMetrics) -> T);

/// A histogram's name, help text, and how to find it in a family's metrics.
type HistogramMetric = (&'static str, &'static str, fn(&FamilyMetrics) -> &HistogramSnapshot);

type Labelled<'a> = &'a [(String, &'static str, FamilyMetrics)];

/// Renders the exposition text.
pub fn render(
    families: Labelled<'_>,
    streams: &[(String, usize)],
    backups: &[(String, f64)],
    backup_leases: usize,
) -> String {
    let mut out = String::with_capacity(4096);
    let counters: [Metric<u64>; 5] = [
        (
            "myelin_appended_transactions_total",
            "Transactions committed (acknowledged) since start",
            |m| m.appended_transactions,
        ),
        ("myelin_appended_events_total", "Events committed since start", |m| {
            m.appended_events
        }),
        (
            "myelin_appended_bytes_total",
            "Serialized event bytes committed since start",
            |m| m.appended_bytes,
        ),
        (
            "myelin_failed_appends_total",
            "Transactions answered with an error since start",
            |m| m.failed_appends,
        ),
        (
            "myelin_read_events_total",
            "Events served to readers since start",
            |m| m.read_events,
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, help, "counter");
        for (context, family, metrics) in families {
            let _ = writeln!(
                out,
                "{name}{{context=\"{}\",family=\"{family}\"}} {}",
                escape(context),
                value(metrics)
            );
        }
    }
    let gauges: [Metric<f64>; 5] = [
        ("myelin_segments", "Segment files (closed and active)", |m| {
            m.segments as f64
        }),
        (
            "myelin_open_segment_files",
            "Closed segment data and index files held open for reads",
            |m| m.open_files as f64,
        ),
        (
            "myelin_disk_bytes",
            "Bytes on disk in segment, index and bloom files",
            |m| m.bytes_on_disk as f64,
        ),
        (
            "myelin_last_token",
            "Token of the newest committed entry, -1 when empty",
            |m| m.last_token as f64,
        ),
        (
            "myelin_poisoned",
            "1 while the store refuses appends after a failed write or sync",
            |m| {
                if m.poisoned { 1.0 } else { 0.0 }
            },
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, help, "gauge");
        for (context, family, metrics) in families {
            let _ = writeln!(
                out,
                "{name}{{context=\"{}\",family=\"{family}\"}} {}",
                escape(context),
                number(value(metrics))
            );
        }
    }
    let histograms: [HistogramMetric; 3] = [
        (
            "myelin_fsync_seconds",
            "Latency of each data sync on the write path",
            |m| &m.fsync_seconds,
        ),
        (
            "myelin_batch_transactions",
            "Transactions per committed batch (one sync each)",
            |m| &m.batch_transactions,
        ),
        ("myelin_batch_bytes", "Bytes written per committed batch", |m| {
            &m.batch_bytes
        }),
    ];
    for (name, help, value) in histograms {
        header(&mut out, name, help, "histogram");
        for (context, family, metrics) in families {
            histogram(
                &mut out,
                name,
                &format!("context=\"{}\",family=\"{family}\"", escape(context)),
                value(metrics),
            );
        }
    }
    header(&mut out, "myelin_tracking_streams", "Open ListEvents streams", "gauge");
    for (context, count) in streams {
        let _ = writeln!(
            out,
            "myelin_tracking_streams{{context=\"{}\"}} {count}",
            escape(context)
        );
    }
    header(
        &mut out,
        "myelin_seconds_since_last_backup",
        "Seconds since the last backup request naming the context (+Inf: never)",
        "gauge",
    );
    for (context, age) in backups {
        let _ = writeln!(
            out,
            "myelin_seconds_since_last_backup{{context=\"{}\"}} {}",
            escape(context),
            number(*age)
        );
    }
    header(
        &mut out,
        "myelin_backup_leases",
        "Live backup leases (while any is, nothing deletes or rewrites a listed file)",
        "gauge",
    );
    let _ = writeln!(out, "myelin_backup_leases {backup_leases}");
    out
}

/// Each replication group on this node: term, leadership, log and applied index, and (on the
/// leader) each member's lag in entries.
pub fn render_raft(out: &mut String, groups: &[myelin_node::GroupStatusInfo]) {
    type Gauge = (
        &'static str,
        &'static str,
        fn(&myelin_node::GroupStatusInfo) -> Option<u64>,
    );
    let gauges: [Gauge; 4] = [
        ("myelin_raft_term", "The group's current term", |g| Some(g.term)),
        ("myelin_raft_leader", "1 when this node leads the group", |g| {
            Some(u64::from(g.state == "Leader"))
        }),
        (
            "myelin_raft_last_log_index",
            "The last entry in this node's log of the group",
            |g| g.last_log_index,
        ),
        ("myelin_raft_applied_index", "The last entry this node applied", |g| {
            g.applied_index
        }),
    ];
    for (name, help, value) in gauges {
        header(out, name, help, "gauge");
        for group in groups {
            if let Some(v) = value(group) {
                let _ = writeln!(
                    out,
                    "{name}{{group=\"{}\",role=\"{}\"}} {v}",
                    escape(&group.group),
                    escape(&group.role)
                );
            }
        }
    }
    header(
        out,
        "myelin_raft_replication_lag",
        "Entries a member's log trails the leader's (reported by the leader)",
        "gauge",
    );
    for group in groups {
        for (node, lag) in &group.lag {
            let _ = writeln!(
                out,
                "myelin_raft_replication_lag{{group=\"{}\",node=\"{}\"}} {lag}",
                escape(&group.group),
                escape(node)
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, snapshot: &HistogramSnapshot) {
    let mut cumulative = 0u64;
    for (bound, count) in snapshot.bounds.iter().zip(&snapshot.counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}", number(*bound));
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", snapshot.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", number(snapshot.sum));
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", snapshot.count);
}

/// A sample value as Prometheus writes it.
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else {
        format!("{value}")
    }
}

/// A label value with `\`, `"` and newlines escaped.
/// Commands and queries: how many of each name ended how and the seconds they took in all (so
/// rate and mean latency follow), and the handlers subscribed per name.
pub fn render_routing(out: &mut String, routing: &myelin_routing::Routing) {
    let families = [
        ("command", "commands", routing.command_stats.snapshot()),
        ("query", "queries", routing.query_stats.snapshot()),
    ];
    for (label, plural, lines) in &families {
        let _ = writeln!(
            out,
            "# HELP myelin_{plural}_total {plural} sent through this node, by context, name and outcome (ok or the Axon code the sender got)"
        );
        let _ = writeln!(out, "# TYPE myelin_{plural}_total counter");
        for (context, name, outcome, stat) in lines {
            let _ = writeln!(
                out,
                "myelin_{plural}_total{{context=\"{}\",{label}=\"{}\",outcome=\"{}\"}} {}",
                escape(context),
                escape(name),
                escape(outcome),
                stat.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP myelin_{label}_seconds_total time from a sender's call to its answer, summed, by context, name and outcome"
        );
        let _ = writeln!(out, "# TYPE myelin_{label}_seconds_total counter");
        for (context, name, outcome, stat) in lines {
            let _ = writeln!(
                out,
                "myelin_{label}_seconds_total{{context=\"{}\",{label}=\"{}\",outcome=\"{}\"}} {}",
                escape(context),
                escape(name),
                escape(outcome),
                stat.seconds
            );
        }
    }
    let mut handlers: std::collections::BTreeMap<(String, String, &str), usize> = std::collections::BTreeMap::new();
    for s in routing.commands.subscriptions(None) {
        *handlers.entry((s.context, s.command, "command")).or_default() += 1;
    }
    for s in routing.queries.subscriptions(None) {
        *handlers.entry((s.context, s.query, "query")).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP myelin_handlers handler streams subscribed, by context, kind (command or query) and name"
    );
    let _ = writeln!(out, "# TYPE myelin_handlers gauge");
    for ((context, name, kind), count) in handlers {
        let _ = writeln!(
            out,
            "myelin_handlers{{context=\"{}\",kind=\"{kind}\",name=\"{}\"}} {count}",
            escape(&context),
            escape(&name)
        );
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routing_lines_count_messages_per_name_and_outcome_and_handlers_per_name() {
        let routing = myelin_routing::Routing::new(Default::default(), Default::default());
        routing
            .command_stats
            .record("default", "Do\"It", "", std::time::Duration::from_millis(250));
        routing
            .command_stats
            .record("default", "Do\"It", "AXONIQ-4000", std::time::Duration::from_millis(1));
        let (outbound, _inbound) = tokio::sync::mpsc::channel(1);
        let stream = routing.commands.connect("default", "client", "component", outbound);
        routing.commands.subscribe(&stream, "Do\"It", 0);
        let mut out = String::new();
        render_routing(&mut out, &routing);
        assert!(
            out.contains("myelin_commands_total{context=\"default\",command=\"Do\\\"It\",outcome=\"ok\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("outcome=\"AXONIQ-4000\"} 1\n"), "{out}");
        assert!(
            out.contains(
                "myelin_command_seconds_total{context=\"default\",command=\"Do\\\"It\",outcome=\"ok\"} 0.25\n"
            ),
            "{out}"
        );
        assert!(out.contains("# TYPE myelin_queries_total counter\n"), "{out}");
        assert!(
            out.contains("myelin_handlers{context=\"default\",kind=\"command\",name=\"Do\\\"It\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn raft_gauges_name_the_group_and_each_lagging_member() {
        let mut out = String::new();
        render_raft(
            &mut out,
            &[myelin_node::GroupStatusInfo {
                group: "default".into(),
                state: "Leader".into(),
                role: "PRIMARY".into(),
                term: 3,
                leader: Some("node-1".into()),
                last_log_index: Some(42),
                applied_index: Some(41),
                lag: vec![("node-2".into(), 0), ("node-3".into(), 7)],
            }],
        );
        assert!(
            out.contains("myelin_raft_term{group=\"default\",role=\"PRIMARY\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("myelin_raft_leader{group=\"default\",role=\"PRIMARY\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("myelin_raft_last_log_index{group=\"default\",role=\"PRIMARY\"} 42"),
            "{out}"
        );
        assert!(
            out.contains("myelin_raft_replication_lag{group=\"default\",node=\"node-3\"} 7"),
            "{out}"
        );
        assert!(out.contains("# TYPE myelin_raft_replication_lag gauge"), "{out}");
    }
}
