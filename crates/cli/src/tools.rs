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
    /// Replace what DIR already holds.
    #[arg(long)]
    force: bool,
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
    let run = report.run.map_or("none".to_string(), |r| r.to_string());
    if report.ok() {
        println!(
            "OK: backup run {run} in {}: {} files, {} bytes, {} blocks checked",
            target.describe(),
            report.files_checked,
            report.bytes_checked,
            report.blocks_checked
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
    let options = myelin_backup::restore::RestoreOptions {
        data_dir: args.data.clone(),
        to_token: args.to_token,
        force: args.force,
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
    println!(
        "reset client tracking tokens beyond these last tokens; start with: myelin serve --data {}",
        args.data.display()
    );
    Ok(())
}
