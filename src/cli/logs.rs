//! Where a command's logs go: `colony node` logs to stdout and to rotating files in the local
//! home's `log/`; the other commands log to stderr, apart from what they print.

use std::path::Path;

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When a new log file is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogRotation {
    /// A file per hour.
    Hourly,
    /// A file per day.
    #[default]
    Daily,
}

/// The prefix of log files in `log/` (`colony.YYYY-MM-DD.log`); other files there are left
/// alone.
pub const LOG_FILE_PREFIX: &str = "colony";

/// `RUST_LOG`, or else `info`; ractor's own per-message spans are kept to warnings by default,
/// since at `info` they cost measurable work on every request.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ractor=warn"))
}

/// Logs to stderr in text: for commands whose stdout is their answer.
pub fn to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The stdout and file layers of `format`.
fn layers<S>(
    format: LogFormat,
    file: tracing_appender::non_blocking::NonBlocking,
) -> Vec<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match format {
        LogFormat::Text => vec![
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(ansi)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .with_writer(file)
                .with_ansi(false)
                .boxed(),
        ],
        LogFormat::Json => vec![
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stdout)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(file)
                .boxed(),
        ],
    }
}

/// Logs to stdout and to `dir/colony.<date>.log`, keeping at most `max_files` such files (the
/// oldest go at start and at each rotation). Keep the guard until exit: dropping it flushes
/// the lines still queued for the file.
///
/// # Errors
/// `dir` cannot be created or the file cannot be opened.
pub fn to_stdout_and_files(
    format: LogFormat,
    dir: &Path,
    rotation: LogRotation,
    max_files: usize,
) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let appender = RollingFileAppender::builder()
        .rotation(match rotation {
            LogRotation::Hourly => Rotation::HOURLY,
            LogRotation::Daily => Rotation::DAILY,
        })
        .filename_prefix(LOG_FILE_PREFIX)
        .filename_suffix("log")
        .max_log_files(max_files.max(1))
        .build(dir)
        .with_context(|| format!("open a log file in {}", dir.display()))?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::registry()
        .with(layers(format, file).with_filter(filter()))
        .init();
    Ok(guard)
}
