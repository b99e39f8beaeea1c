//! The report: markdown tables per workload (the systems side by side, the disk's limit next
//! to the appends, and the ratios the targets are about) and the plot of append
//! throughput against clients, built from the JSON lines of many runs.
//!
//! When a cell was measured more than once, the run with the median events/s is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::record::Record;

/// The report's section of `docs/BENCHMARKS.md` lies between these lines.
pub const START_MARKER: &str = "<!-- bench-compare:start -->";
pub const END_MARKER: &str = "<!-- bench-compare:end -->";

/// The plot script, run with the Python given to `report --python`.
const PLOT_SCRIPT: &str = include_str!("append_scaling.py");

/// Systems in the order of the tables' columns.
const SYSTEMS: [&str; 4] = ["myelin", "umadb", "postgres", "disk"];

pub fn display_name(system: &str) -> &str {
    match system {
        "myelin" => "Myelin",
        "umadb" => "UmaDB",
        "postgres" => "PostgreSQL",
        "disk" => "disk limit",
        other => other,
    }
}

/// Cells keyed by what was measured; each holds the median run.
struct Cells {
    cells: BTreeMap<(String, String, u32, u32, u32), Record>,
}

impl Cells {
    fn new(records: &[Record]) -> Cells {
        let mut groups: BTreeMap<(String, String, u32, u32, u32), Vec<&Record>> = BTreeMap::new();
        for r in records {
            let key = (
                r.workload.clone(),
                r.system.clone(),
                r.clients,
                r.events_per_tx,
                r.payload_bytes,
            );
            groups.entry(key).or_default().push(r);
        }
        let cells = groups
            .into_iter()
            .map(|(key, mut runs)| {
                runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
                (key, runs[(runs.len() - 1) / 2].clone())
            })
            .collect();
        Cells { cells }
    }

    fn get(&self, workload: &str, system: &str, clients: u32, events_per_tx: u32, payload: u32) -> Option<&Record> {
        self.cells.get(&(
            workload.to_string(),
            system.to_string(),
            clients,
            events_per_tx,
            payload,
        ))
    }

    fn of(&self, workload: &str) -> impl Iterator<Item = &Record> {
        self.cells.values().filter(move |r| r.workload == workload)
    }

    fn systems(&self, workload: &str) -> Vec<&'static str> {
        let present: BTreeSet<&str> = self.of(workload).map(|r| r.system.as_str()).collect();
        SYSTEMS.into_iter().filter(|s| present.contains(s)).collect()
    }
}

/// `1,234,567` (rounded to a whole number).
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    let rounded = value.round().abs() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 && rounded > 0 {
        out.insert(0, '-');
    }
    out
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn show_ratio(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.2}×"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("—".to_string(), |v| format!("{v:.0}%"))
}

/// Server CPU time per operation in µs: what one transaction or read costs the server,
/// whatever the load generator sharing the machine leaves it.
fn cpu_per_op(r: &Record) -> String {
    match r.server_cpu_percent {
        Some(cpu) if r.operations_per_sec > 0.0 => format!("{:.0} µs", cpu / 100.0 * 1e6 / r.operations_per_sec),
        _ => "—".to_string(),
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("—".to_string(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
}

/// `p50 / p99 / p99.9` of one operation, in ms.
fn latencies(r: &Record, op: &str) -> String {
    r.latency.get(op).map_or("—".to_string(), |l| {
        format!("{} / {} / {}", ms(l.p50_ms), ms(l.p99_ms), ms(l.p999_ms))
    })
}

fn extra(r: &Record, key: &str) -> f64 {
    r.extra.get(key).copied().unwrap_or(0.0)
}

/// Renders the whole section (without the markers). `preamble` goes right under the
/// heading; `image` is the plot's path relative to the markdown file, when there is one.
pub fn render(records: &[Record], preamble: &str, image: Option<&str>) -> String {
    let cells = Cells::new(records);
    let mut out = String::new();
    let _ = writeln!(out, "## Side by side: Myelin, UmaDB, PostgreSQL and the disk\n");
    if !preamble.trim().is_empty() {
        let _ = writeln!(out, "{}\n", preamble.trim_end());
    }
    targets(&cells, &mut out);
    appends(&cells, image, &mut out);
    track(&cells, &mut out);
    aggregates(&cells, &mut out);
    mixed(&cells, &mut out);
    loads(&cells, &mut out);
    out
}

fn verdict(value: Option<f64>, goal: f64) -> &'static str {
    match value {
        Some(v) if v >= goal => "met",
        Some(_) => "**missed**",
        None => "not measured",
    }
}

fn targets(cells: &Cells, out: &mut String) {
    let _ = writeln!(out, "### Targets (issue 7)\n");
    let _ = writeln!(out, "| target | cell | measured | |");
    let _ = writeln!(out, "|---|---|---:|---|");
    let rate = |system: &str, clients: u32, events: u32, payload: u32| {
        cells
            .get("append", system, clients, events, payload)
            .map(|r| r.events_per_sec)
    };
    let configs: BTreeSet<(u32, u32)> = cells
        .of("append")
        .filter(|r| r.system == "myelin")
        .map(|r| (r.events_per_tx, r.payload_bytes))
        .collect();
    for &(events, payload) in &configs {
        let cell = format!("64 clients × {events} event(s), {payload} B");
        let myelin = rate("myelin", 64, events, payload);
        let vs_umadb = ratio(myelin, rate("umadb", 64, events, payload));
        let vs_pg = ratio(myelin, rate("postgres", 64, events, payload));
        let _ = writeln!(
            out,
            "| append ≥ 2× UmaDB | {cell} | {} | {} |",
            show_ratio(vs_umadb),
            verdict(vs_umadb, 2.0)
        );
        let _ = writeln!(
            out,
            "| append ≥ 5× PostgreSQL | {cell} | {} | {} |",
            show_ratio(vs_pg),
            verdict(vs_pg, 5.0)
        );
        // Throughput on a machine shared with the load generator also measures the generator;
        // what a transaction costs the server does not.
        let cost = |system: &str| {
            let r = cells.get("append", system, 64, events, payload)?;
            let cpu = r.server_cpu_percent?;
            (r.operations_per_sec > 0.0).then(|| cpu / r.operations_per_sec)
        };
        let _ = writeln!(
            out,
            "| (not a target) server CPU per transaction: UmaDB ÷ Myelin, PostgreSQL ÷ Myelin | {cell} | {} / {} | |",
            show_ratio(ratio(cost("umadb"), cost("myelin"))),
            show_ratio(ratio(cost("postgres"), cost("myelin")))
        );
    }
    let hundred: BTreeSet<(u32, u32)> = cells
        .of("append")
        .filter(|r| r.system == "myelin" && r.events_per_tx == 100)
        .map(|r| (r.payload_bytes, r.clients))
        .collect();
    for &(payload, clients) in &hundred {
        let myelin = rate("myelin", clients, 100, payload);
        let noun = if clients == 1 { "client" } else { "clients" };
        let cell = format!("{clients} {noun}, {payload} B");
        let as_percent = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{:.0}%", r * 100.0));
        let of_single = ratio(myelin, rate("disk", 1, 100, payload));
        let _ = writeln!(
            out,
            "| 100-event transactions ≥ 80% of the disk limit (one transaction per fdatasync) | {cell} | {} | {} |",
            as_percent(of_single),
            verdict(of_single, 0.8)
        );
        if clients > 1 {
            let of_group = ratio(myelin, rate("disk", clients, 100, payload));
            let _ = writeln!(
                out,
                "| … strictest reading (one transaction of every client per fdatasync) | {cell} | {} | {} |",
                as_percent(of_group),
                verdict(of_group, 0.8)
            );
        }
    }
    let track_rate = |system: &str| {
        cells
            .of("track")
            .filter(|r| r.system == system)
            .map(|r| r.events_per_sec)
            .reduce(f64::max)
    };
    let myelin_track = track_rate("myelin");
    let _ = writeln!(
        out,
        "| tracking read ≥ 1M events/s | Myelin | {} events/s | {} |",
        myelin_track.map_or("—".to_string(), thousands),
        verdict(myelin_track, 1e6)
    );
    let vs_umadb = ratio(myelin_track, track_rate("umadb"));
    let _ = writeln!(
        out,
        "| tracking read ahead of UmaDB | Myelin ÷ UmaDB | {} | {} |\n",
        show_ratio(vs_umadb),
        match vs_umadb {
            Some(r) if r > 1.0 => "met",
            Some(_) => "**missed**",
            None => "not measured",
        }
    );
}

fn appends(cells: &Cells, image: Option<&str>, out: &mut String) {
    let systems = cells.systems("append");
    if systems.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Durable appends\n");
    let _ = writeln!(
        out,
        "Closed-loop clients, each appending one transaction to its own aggregate and waiting for \
         the durable acknowledgement before the next. *disk limit*: `pwrite` + `fdatasync` of \
         clients × events × payload bytes at a time, one after the other (see \
         `crates/bench/src/load/disk.rs`): with 1 client, one transaction per `fdatasync`; with N, \
         what a perfect group commit of one transaction from every client would write. \
         Latencies are p50 / p99 / p99.9 in ms (for the disk: of the `fdatasync` alone). Server \
         memory: peak RSS of the server process; for PostgreSQL, sampled every 250 ms, the private \
         memory of all its processes plus its shared buffers once.\n"
    );
    if let Some(image) = image {
        let _ = writeln!(out, "![Durable append throughput against clients]({image})\n");
    }
    let configs: BTreeSet<(u32, u32)> = cells.of("append").map(|r| (r.events_per_tx, r.payload_bytes)).collect();
    for (events, payload) in configs {
        let rows: BTreeSet<u32> = cells
            .of("append")
            .filter(|r| r.events_per_tx == events && r.payload_bytes == payload)
            .map(|r| r.clients)
            .collect();
        let plural = if events == 1 { "event" } else { "events" };
        let _ = writeln!(out, "#### {events} {plural} per transaction, {payload}-byte payloads\n");
        let mut header = "| clients |".to_string();
        let mut rule = "|---:|".to_string();
        for s in &systems {
            let _ = write!(header, " {} events/s |", display_name(s));
            rule.push_str("---:|");
        }
        let myelin = systems.contains(&"myelin");
        let ratios: Vec<&str> = ["umadb", "postgres"]
            .into_iter()
            .filter(|s| myelin && systems.contains(s))
            .collect();
        for s in &ratios {
            let _ = write!(header, " Myelin ÷ {} |", display_name(s));
            rule.push_str("---:|");
        }
        // Against the disk two ways: one transaction per fdatasync (the clients = 1 probe, the
        // limit of a store that syncs each transaction alone), and one transaction of every
        // client per fdatasync (a perfect group commit: the strictest reading).
        let disk = myelin && systems.contains(&"disk");
        if disk {
            header.push_str(" Myelin ÷ disk, 1 tx per fdatasync | Myelin ÷ disk, all clients' tx per fdatasync |");
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        let single = cells
            .get("append", "disk", 1, events, payload)
            .map(|r| r.events_per_sec);
        for &clients in &rows {
            let rate = |s: &str| {
                cells
                    .get("append", s, clients, events, payload)
                    .map(|r| r.events_per_sec)
            };
            let mut line = format!("| {clients} |");
            for s in &systems {
                let _ = write!(line, " {} |", rate(s).map_or("—".to_string(), thousands));
            }
            for s in &ratios {
                let _ = write!(line, " {} |", show_ratio(ratio(rate("myelin"), rate(s))));
            }
            if disk {
                let _ = write!(
                    line,
                    " {} | {} |",
                    show_ratio(ratio(rate("myelin"), single)),
                    show_ratio(ratio(rate("myelin"), rate("disk")))
                );
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\n| clients | system | events/s | tx/s | latency p50 / p99 / p99.9 ms | server CPU | server CPU per tx | server memory | client CPU |"
        );
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for &clients in &rows {
            for s in &systems {
                let Some(r) = cells.get("append", s, clients, events, payload) else {
                    continue;
                };
                let op = if *s == "disk" { "fdatasync" } else { "append" };
                let _ = writeln!(
                    out,
                    "| {clients} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
                    display_name(s),
                    thousands(r.events_per_sec),
                    thousands(r.operations_per_sec),
                    latencies(r, op),
                    percent(r.server_cpu_percent),
                    cpu_per_op(r),
                    mib(r.server_peak_memory_bytes),
                    r.client_cpu_percent
                );
            }
        }
        let _ = writeln!(out);
    }
}

fn track(cells: &Cells, out: &mut String) {
    let systems = cells.systems("track");
    if systems.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Tracking read\n");
    let _ = writeln!(
        out,
        "One client reads the store from its first event, in order (Myelin: ListEvents with Axon's \
         permits; UmaDB: Read in batches of 1024; PostgreSQL: pages of 1024 rows by global index). \
         Latency: time per 1000 events received.\n"
    );
    let _ = writeln!(
        out,
        "| system | events | payload | events/s | per 1000 events p50 / p99 / p99.9 ms | server CPU | server memory | client CPU |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in systems
        .iter()
        .flat_map(|s| cells.of("track").filter(move |r| r.system == *s))
    {
        let _ = writeln!(
            out,
            "| {} | {} | {} B | {} | {} | {} | {} | {:.0}% |",
            display_name(&r.system),
            thousands(r.events as f64),
            r.payload_bytes,
            thousands(r.events_per_sec),
            latencies(r, "per_1000_events"),
            percent(r.server_cpu_percent),
            mib(r.server_peak_memory_bytes),
            r.client_cpu_percent
        );
    }
    let _ = writeln!(out);
}

fn aggregates(cells: &Cells, out: &mut String) {
    let systems = cells.systems("aggregates");
    if systems.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Aggregate reads\n");
    let _ = writeln!(
        out,
        "Closed-loop clients each reading a random aggregate of the loaded store in full, again and \
         again (Myelin: ListAggregateEvents; UmaDB: Read by tag `aggregate:<id>`; PostgreSQL: by \
         aggregate identifier, ordered by sequence number).\n"
    );
    let _ = writeln!(
        out,
        "| system | clients | store events | aggregates | reads/s | events/s | latency p50 / p99 / p99.9 ms | server CPU | server CPU per read | server memory | client CPU |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in systems
        .iter()
        .flat_map(|s| cells.of("aggregates").filter(move |r| r.system == *s))
    {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            display_name(&r.system),
            r.clients,
            r.store_events_before.map_or("—".to_string(), |n| thousands(n as f64)),
            thousands(extra(r, "aggregates")),
            thousands(r.operations_per_sec),
            thousands(r.events_per_sec),
            latencies(r, "read_aggregate"),
            percent(r.server_cpu_percent),
            cpu_per_op(r),
            mib(r.server_peak_memory_bytes),
            r.client_cpu_percent
        );
    }
    let _ = writeln!(out);
}

fn mixed(cells: &Cells, out: &mut String) {
    let systems = cells.systems("mixed");
    if systems.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Mixed reads and writes\n");
    let _ = writeln!(
        out,
        "Writers append to their own aggregates, readers read random loaded aggregates, and one \
         client follows the end of the store (Myelin: ListEvents; UmaDB: Subscribe; PostgreSQL: \
         polling every 10 ms), all at once.\n"
    );
    let _ = writeln!(
        out,
        "| system | writers | readers | events/tx | appended events/s | append p50 / p99 / p99.9 ms | aggregate reads/s | read p50 / p99 / p99.9 ms | followed events/s | server CPU | server memory |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in systems
        .iter()
        .flat_map(|s| cells.of("mixed").filter(move |r| r.system == *s))
    {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            display_name(&r.system),
            extra(r, "writers"),
            extra(r, "readers"),
            r.events_per_tx,
            thousands(extra(r, "append_events_per_sec")),
            latencies(r, "append"),
            thousands(extra(r, "reads_per_sec")),
            latencies(r, "read_aggregate"),
            if extra(r, "tailers") > 0.0 {
                thousands(extra(r, "tail_events_per_sec"))
            } else {
                "—".to_string()
            },
            percent(r.server_cpu_percent),
            mib(r.server_peak_memory_bytes)
        );
    }
    let _ = writeln!(out);
}

fn loads(cells: &Cells, out: &mut String) {
    let systems = cells.systems("load");
    if systems.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Loading the stores for the read workloads\n");
    let _ = writeln!(
        out,
        "Round by round (every aggregate's next event per round), so each aggregate's events are \
         spread over the whole store.\n"
    );
    let _ = writeln!(
        out,
        "| system | events | aggregates | events/tx | clients | events/s | append p50 / p99 / p99.9 ms | server CPU | server memory |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in systems
        .iter()
        .flat_map(|s| cells.of("load").filter(move |r| r.system == *s))
    {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            display_name(&r.system),
            thousands(r.events as f64),
            thousands(extra(r, "aggregates")),
            r.events_per_tx,
            r.clients,
            thousands(r.events_per_sec),
            latencies(r, "append"),
            percent(r.server_cpu_percent),
            mib(r.server_peak_memory_bytes)
        );
    }
    let _ = writeln!(out);
}

/// Puts `section` between the markers of `document`, or appends markers and section at the
/// end when the document has none. Nothing outside the markers changes.
pub fn replace_section(document: &str, section: &str) -> Result<String> {
    let body = format!("{START_MARKER}\n{}\n{END_MARKER}", section.trim_end());
    match (document.find(START_MARKER), document.find(END_MARKER)) {
        (Some(start), Some(end)) if start < end => Ok(format!(
            "{}{body}{}",
            &document[..start],
            &document[end + END_MARKER.len()..]
        )),
        (None, None) => {
            let separator = if document.is_empty() || document.ends_with("\n\n") {
                ""
            } else if document.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{document}{separator}{body}\n"))
        }
        _ => bail!("the markers {START_MARKER} and {END_MARKER} must both be present, in that order, or neither"),
    }
}

/// Writes `section` between the markers of the markdown file at `path` (created if missing).
pub fn write_into(path: &Path, section: &str) -> Result<()> {
    let document = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_section(&document, section).with_context(|| format!("updating {}", path.display()))?;
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[derive(Serialize)]
struct PlotData {
    title: String,
    panels: Vec<Panel>,
}

#[derive(Serialize)]
struct Panel {
    title: String,
    ticks: Vec<u32>,
    series: Vec<Series>,
}

#[derive(Serialize)]
struct Series {
    name: String,
    x: Vec<u32>,
    y: Vec<f64>,
}

/// Throughput against clients, one line per system, for 1- and 100-event transactions with
/// 200-byte payloads (when measured).
fn plot_data(records: &[Record]) -> PlotData {
    let cells = Cells::new(records);
    let mut panels = Vec::new();
    for events in [1u32, 100] {
        let mut series = Vec::new();
        let mut ticks = BTreeSet::new();
        for system in SYSTEMS {
            let points: Vec<(u32, f64)> = cells
                .of("append")
                .filter(|r| r.system == system && r.events_per_tx == events && r.payload_bytes == 200)
                .map(|r| (r.clients, r.events_per_sec))
                .collect();
            if points.is_empty() {
                continue;
            }
            ticks.extend(points.iter().map(|p| p.0));
            let name = if system == "disk" {
                "disk limit, all clients' transactions per fdatasync".to_string()
            } else {
                display_name(system).to_string()
            };
            series.push(Series {
                name,
                x: points.iter().map(|p| p.0).collect(),
                y: points.iter().map(|p| p.1).collect(),
            });
        }
        if let (Some(single), Some(first), Some(last)) = (
            cells.get("append", "disk", 1, events, 200),
            ticks.first().copied(),
            ticks.last().copied(),
        ) {
            series.push(Series {
                name: "disk limit, one transaction per fdatasync".to_string(),
                x: vec![first, last],
                y: vec![single.events_per_sec; 2],
            });
        }
        if !series.is_empty() {
            let plural = if events == 1 { "event" } else { "events" };
            panels.push(Panel {
                title: format!("{events} {plural} per transaction, 200-byte payloads"),
                ticks: ticks.into_iter().collect(),
                series,
            });
        }
    }
    PlotData {
        title: "Durable appends: throughput against concurrent clients".to_string(),
        panels,
    }
}

/// Draws the plot into `png` with matplotlib, through `python`.
pub fn plot(records: &[Record], png: &Path, python: &str) -> Result<()> {
    let data = plot_data(records);
    ensure!(
        !data.panels.is_empty(),
        "nothing to plot: no append results with 1 or 100 events per transaction and 200-byte payloads"
    );
    let json = serde_json::to_vec(&data).context("encoding the plot data")?;
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut child = Command::new(python)
        .arg("-c")
        .arg(PLOT_SCRIPT)
        .arg(png)
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python} to draw the plot (it needs matplotlib)"))?;
    child
        .stdin
        .take()
        .context("plot script stdin")?
        .write_all(&json)
        .context("sending the plot data")?;
    let status = child.wait().context("waiting for the plot script")?;
    ensure!(
        status.success(),
        "the plot script failed ({status}); is matplotlib installed for {python}?"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(f64::NAN), "—");
    }

    #[test]
    fn section_replaced_between_markers_only() {
        let doc = format!("# T\n\nbefore\n{START_MARKER}\nold\n{END_MARKER}\nafter\n");
        let updated = replace_section(&doc, "new\n").expect("replace");
        assert_eq!(
            updated,
            format!("# T\n\nbefore\n{START_MARKER}\nnew\n{END_MARKER}\nafter\n")
        );
        // Idempotent.
        assert_eq!(replace_section(&updated, "new\n").expect("again"), updated);
    }

    #[test]
    fn plot_has_a_line_per_system_and_a_panel_per_transaction_size() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/results.jsonl");
        let records = crate::load::record::read_all(&fixture).expect("fixture");
        let data = plot_data(&records);
        assert_eq!(data.panels.len(), 2);
        let panel = &data.panels[0];
        assert_eq!(panel.ticks, [1, 64]);
        let names: Vec<&str> = panel.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Myelin",
                "UmaDB",
                "PostgreSQL",
                "disk limit, all clients' transactions per fdatasync",
                "disk limit, one transaction per fdatasync"
            ]
        );
        assert_eq!(panel.series[4].y, [4000.0, 4000.0]);
        // The median of the three 64-client runs.
        assert_eq!(panel.series[0].y, [3000.0, 60000.0]);
    }

    #[test]
    fn markers_appended_when_absent() {
        let updated = replace_section("# T\ntext\n", "body").expect("append");
        assert_eq!(updated, format!("# T\ntext\n\n{START_MARKER}\nbody\n{END_MARKER}\n"));
        assert!(replace_section(&format!("x {END_MARKER} {START_MARKER}"), "b").is_err());
        assert!(replace_section(&format!("x {START_MARKER}"), "b").is_err());
    }
}
