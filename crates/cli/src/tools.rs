//! `myelin backup`, `myelin verify`, `myelin restore`: argument handling and what the operator
//! sees (progress, the closing summary, one-line errors). The work is `myelin-backup`'s.
//!
//! Exit codes: 0 success; 1 the operation failed, or `verify` found problems (each printed);
//! 2 bad arguments (clap).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use myelin_backup::restore::{ClusterRestore, ClusterRestored};
use myelin_backup::run::{BackupOptions, Progress};
use myelin_backup::source::{FetchMode, Server};
use myelin_backup::target::open_target;
use myelin_format::segment::SegmentKind;

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The server's HTTP address, e.g. http://localhost:8024.
    #[arg(long, value_name = "URL", default_value = "http://localhost:8024")]
    server: String,
    /// Where the backup goes: a directory, or s3://bucket/prefix (credentials and endpoint from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).
    #[arg(long, value_name = "TARGET")]
    to: String,
    /// Admin access token, when the server has access control on (or MYELIN_BACKUP_TOKEN).
    #[arg(long, env = "MYELIN_BACKUP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Contexts to back up (default: all). May be repeated or comma-separated.
    #[arg(long = "context", value_name = "NAME", value_delimiter = ',')]
    contexts: Vec<String>,
    /// Types to back up (default: both).
    #[arg(long = "type", value_enum, value_delimiter = ',')]
    types: Vec<TypeArg>,
    /// How to read the files the server lists: by path when readable here (auto), always by
    /// path (local: Axon's model, works against Axon Server), or always over HTTP (stream).
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    fetch: ModeArg,
    /// Seconds the server's backup lease lasts between renewals.
    #[arg(long, default_value_t = 300)]
    lease_seconds: u64,
    /// Print what would be copied, copy nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Event,
    Snapshot,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    Local,
    Stream,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The backup: a directory or s3://bucket/prefix.
    #[arg(value_name = "TARGET")]
    target: String,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup: a directory or s3://bucket/prefix.
    #[arg(value_name = "TARGET")]
    target: String,
    /// The data directory to restore into (start the server with `--data DIR`).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Restore events only up to the last transaction ending at or before this token.
    #[arg(long, value_name = "N")]
    to_token: Option<u64>,
    /// Replace what DIR (and, with --log-dir, the groups' log directories) already holds.
    #[arg(long)]
    force: bool,
    /// A cluster node's backup: restore the control database and event stores but not the log,
    /// and make the node forget its old cluster; started with
    /// axoniq.axonserver.autocluster.first set to its own internal address, it forms a new
    /// cluster from its data that other, empty nodes join.
    #[arg(long, conflicts_with = "whole_cluster")]
    reseed: bool,
    /// A cluster node's backup, when every node of the cluster is restored from its own backup:
    /// the log too (into --log-dir), Raft state as backed up; the nodes then start as before.
    #[arg(long)]
    whole_cluster: bool,
    /// The node's replication-log directory (axoniq.axonserver.replication.log-storage-folder):
    /// where --whole-cluster puts the logs, and where --reseed makes sure no old log remains.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A progress bar on a terminal (files and bytes copied, the file being copied); nothing
/// otherwise.
struct Bar(Option<ProgressBar>, std::sync::atomic::AtomicU64);

impl Progress for Bar {
    fn file_started(&self, name: &str, _size_hint: Option<u64>) {
        if let Some(bar) = &self.0 {
            let done = self.1.load(std::sync::atomic::Ordering::Relaxed);
            bar.set_message(format!("{done} files; copying {name}"));
        }
    }

    fn file_done(&self, _name: &str, bytes: u64) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let mode = match args.fetch {
        ModeArg::Auto => FetchMode::Auto,
        ModeArg::Local => FetchMode::Local,
        ModeArg::Stream => FetchMode::Stream,
    };
    let server = Server::new(&args.server, args.token.clone(), mode)?;
    let target = open_target(&args.to).with_context(|| format!("cannot open the target {}", args.to))?;
    let kinds = if args.types.is_empty() {
        vec![SegmentKind::Events, SegmentKind::Snapshots]
    } else {
        args.types
            .iter()
            .map(|t| match t {
                TypeArg::Event => SegmentKind::Events,
                TypeArg::Snapshot => SegmentKind::Snapshots,
            })
            .collect()
    };
    let options = BackupOptions {
        contexts: (!args.contexts.is_empty()).then(|| args.contexts.clone()),
        kinds,
        lease_ttl: Duration::from_secs(args.lease_seconds.clamp(1, 3600)),
        dry_run: args.dry_run,
    };
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.dry_run {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {bytes} copied ({bytes_per_sec}) {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let progress = Bar(bar, std::sync::atomic::AtomicU64::new(0));
    let report = runtime()?.block_on(myelin_backup::run::backup(
        &server,
        target.as_ref(),
        &options,
        &progress,
    ))?;
    if let Some(bar) = &progress.0 {
        bar.finish_and_clear();
    }
    if report.dry_run {
        println!(
            "dry run: backup run {} into {} would copy:",
            report.run,
            target.describe()
        );
        println!("  the control database (a new zip)");
        for (group, log) in &report.log {
            for file in &log.planned {
                println!("  log of group {group}: {file}");
            }
        }
        for (context, done) in &report.contexts {
            for (family, plan) in &done.families {
                for file in &plan.files {
                    println!("  {context} {family}: {file}");
                }
            }
        }
        return Ok(());
    }
    println!(
        "backup run {} into {} ({}) in {:.1} s{}",
        report.run,
        target.describe(),
        report.manifest,
        report.elapsed.as_secs_f64(),
        if report.lease {
            ""
        } else {
            " (the server has no backup lease: Axon Server?)"
        }
    );
    if let Some(cluster) = &report.cluster_id {
        println!("a node of cluster {cluster}: the log of each replication group, replaced as a whole");
    }
    for (group, log) in &report.log {
        let last = log.last_index.map_or("none".to_string(), |i| i.to_string());
        println!(
            "  log of group {group}: {} files, {} bytes, entries {} to {last}",
            log.files, log.bytes, log.first_index
        );
    }
    if report.stale_log_files_deleted > 0 {
        println!(
            "  {} log files of earlier runs deleted from the target",
            report.stale_log_files_deleted
        );
    }
    println!(
        "{:<20} {:>10} {:>11} {:>13} {:>13} {:>11} {:>9}",
        "context", "type", "new closed", "active bytes", "bytes copied", "last token", "elapsed"
    );
    for (context, done) in &report.contexts {
        for (family, copied) in &done.families {
            println!(
                "{:<20} {:>10} {:>11} {:>13} {:>13} {:>11} {:>8.1}s",
                context,
                family,
                copied.new_closed_segments,
                copied.active_bytes,
                copied.bytes,
                done.last_token,
                done.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Returns whether the backup is whole.
pub fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let target = open_target(&args.target).with_context(|| format!("cannot open the target {}", args.target))?;
    let report = runtime()?.block_on(myelin_backup::verify::verify(target.as_ref()))?;
    for problem in &report.problems {
        println!("PROBLEM {problem}");
    }
    for note in &report.notes {
        println!("NOTE {note}");
    }
    let run = report.run.map_or("none".to_string(), |r| r.to_string());
    if report.ok() {
        println!(
            "OK: backup run {run} in {}: {} files, {} bytes, {} blocks, {} log entries checked",
            target.describe(),
            report.files_checked,
            report.bytes_checked,
            report.blocks_checked,
            report.log_entries_checked
        );
    } else {
        println!(
            "FAILED: {} problem(s) in backup run {run} in {}",
            report.problems.len(),
            target.describe()
        );
    }
    Ok(report.ok())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let target = open_target(&args.target).with_context(|| format!("cannot open the target {}", args.target))?;
    let cluster = match (args.reseed, args.whole_cluster) {
        (true, _) => ClusterRestore::Reseed,
        (false, true) => ClusterRestore::WholeCluster,
        (false, false) => ClusterRestore::Plain,
    };
    let options = myelin_backup::restore::RestoreOptions {
        data_dir: args.data.clone(),
        to_token: args.to_token,
        force: args.force,
        cluster,
        log_dir: args.log_dir.clone(),
    };
    let report = runtime()?
        .block_on(myelin_backup::restore::restore(target.as_ref(), &options))
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "restored backup run {} into {}: {} files, {} bytes",
        report.run,
        args.data.display(),
        report.files,
        report.bytes
    );
    for (context, restored) in &report.contexts {
        println!("  context {context}: last token {}", restored.last_token);
        if let Some(stopped) = &restored.stopped {
            println!("    {stopped}");
        }
        if !restored.snapshots_restored {
            println!("    snapshots not restored (a point-in-time restore; aggregates rebuild from events)");
        }
    }
    println!("reset client tracking tokens beyond these last tokens");
    match &report.cluster {
        None => println!("start with: myelin serve --data {}", args.data.display()),
        Some(cluster) => print_cluster_restore(cluster, &args),
    }
    Ok(())
}

/// What the operator must do next with a restored cluster node, per restore path.
fn print_cluster_restore(cluster: &ClusterRestored, args: &RestoreArgs) {
    let id = cluster.cluster_id.as_deref().unwrap_or("(unknown)");
    let node = cluster.node_name.as_deref().unwrap_or("(unknown)");
    println!("this is a backup of node {node} of cluster {id}");
    for (group, last) in &cluster.logs {
        let last = last.map_or("no entries".to_string(), |l| format!("entries up to {l}"));
        println!("  log of group {group} laid down: {last}");
    }
    for group in &cluster.committed_lowered {
        println!("  group {group}: committed position lowered to the end of the restored log");
    }
    let data = args.data.display();
    match cluster.mode {
        ClusterRestore::Plain => {
            if cluster.marked_restored {
                println!(
                    "the node is marked as restored from cluster {id}: it refuses to rejoin that cluster, whose \
                     log and votes have moved on since this backup"
                );
            }
            if cluster.logs.is_empty() {
                println!("the replication logs were not laid down (no --log-dir)");
            }
            println!("CHOOSE how to bring it back, and restore again with --force:");
            println!(
                "  --reseed: a new cluster from this node's data. Start it with \
                 --set axoniq.axonserver.autocluster.first=<its own internal-hostname:internal-port>; \
                 other nodes with empty data join it and catch up by snapshot"
            );
            println!(
                "  --whole-cluster --log-dir DIR: every node of cluster {id} restored from its own backup, \
                 logs included; then start them all as before"
            );
        }
        ClusterRestore::Reseed => {
            println!("re-seed: the node forgot cluster {id} (and will refuse to rejoin it); the log was not restored");
            if args.log_dir.is_none() {
                println!(
                    "make sure its log directory (axoniq.axonserver.replication.log-storage-folder) holds no \
                     directory of the groups {:?}",
                    cluster.groups
                );
            }
            println!(
                "start it alone with: myelin serve --data {data} --set \
                 axoniq.axonserver.autocluster.first=<its own internal-hostname:internal-port> --set \
                 axoniq.axonserver.autocluster.contexts=<its contexts>; it forms a new cluster over its data, \
                 and other nodes with empty data join it (autocluster.first = this node)"
            );
        }
        ClusterRestore::WholeCluster => {
            println!(
                "whole-cluster restore: raft state kept as backed up. Restore every other node of cluster {id} \
                 from its own backup the same way, then start them all with their previous configuration \
                 (myelin serve --data {data}, log-storage-folder {})",
                args.log_dir
                    .as_ref()
                    .map_or("?".to_string(), |d| d.display().to_string())
            );
        }
    }
}
