//! `myelin`: the Myelin server and its tools. This file only parses arguments and hands them to
//! the module that does the work; nothing here knows about storage or the wire protocol.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

mod config;
mod properties;
mod serve;
mod tools;
mod units;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Overrides;

/// Myelin: a drop-in Axon Server.
#[derive(Debug, Parser)]
#[command(name = "myelin", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `myelin [FLAGS]` with no command is `myelin serve [FLAGS]`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Back up a running server: control database, then every context's closed segments past
    /// the last backup, then the active segments; ends with a checksummed manifest.
    Backup(tools::BackupArgs),
    /// Check a backup: manifest, files, checksums, token continuity, every block's CRC, the
    /// control database. Exit code 1 if anything is wrong.
    Verify(tools::VerifyArgs),
    /// Lay a backup down as a data directory, to its end or to a token.
    Restore(tools::RestoreArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Read this properties file instead of ./axonserver.properties and
    /// ./config/axonserver.properties.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set any property, e.g. `--set axoniq.axonserver.event.segment-size=64MB`; overrides the
    /// file, the environment and --data. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Keep events, snapshots and the control database under DIR (each context in DIR/<context>).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl ServeArgs {
    fn into_overrides(self) -> Overrides {
        Overrides {
            config_file: self.config,
            data_dir: self.data,
            sets: self.set,
        }
    }
}

fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{arg}`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    let result = match command {
        Command::Serve(args) => serve::run(args.into_overrides()),
        Command::Backup(args) => tools::backup(args),
        Command::Verify(args) => match tools::verify(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(err) => Err(err),
        },
        Command::Restore(args) => tools::restore(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so that stdout stays free for
/// the output of the tool commands.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve_with_the_same_flags() {
        let cli = Cli::try_parse_from(["myelin", "--data", "/d", "--set", "a.b=c=d"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.data, Some(PathBuf::from("/d")));
        assert_eq!(cli.serve.set, vec![("a.b".to_string(), "c=d".to_string())]);
    }

    #[test]
    fn serve_takes_config_data_and_repeated_set() {
        let cli = Cli::try_parse_from([
            "myelin",
            "serve",
            "--config",
            "x.properties",
            "--set",
            "k=1",
            "--set",
            "j=",
            "--data",
            "d",
        ])
        .expect("parses");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve");
        };
        let overrides = args.into_overrides();
        assert_eq!(overrides.config_file, Some(PathBuf::from("x.properties")));
        assert_eq!(overrides.data_dir, Some(PathBuf::from("d")));
        assert_eq!(
            overrides.sets,
            vec![("k".to_string(), "1".to_string()), ("j".to_string(), String::new())]
        );
    }

    #[test]
    fn set_without_equals_is_rejected() {
        let err = Cli::try_parse_from(["myelin", "serve", "--set", "novalue"]).expect_err("bad");
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }
}
