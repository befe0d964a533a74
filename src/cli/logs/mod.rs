//! Where a command's logs go: `colony node` logs to stdout and to rotating files in the local
//! home's `log/`; the other commands log to stderr, apart from what they print.

mod files;

use std::path::Path;

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
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

/// Logs to stdout and to `dir/colony.<date>.log` (see [`files`]), a new file each period and,
/// with `max_bytes`, each time a file would pass that size; at most `max_files` files (the
/// oldest go at start and at each new file). Keep the guard until exit: dropping it flushes
/// the lines still queued for the file.
///
/// # Errors
/// `dir` cannot be created or the file cannot be opened.
pub fn to_stdout_and_files(
    format: LogFormat,
    dir: &Path,
    rotation: LogRotation,
    max_bytes: Option<u64>,
    max_files: usize,
) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let appender = files::LogFiles::open(dir, rotation, max_bytes, max_files)
        .with_context(|| format!("open a log file in {}", dir.display()))?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::registry()
        .with(layers(format, file).with_filter(filter()))
        .init();
    Ok(guard)
}

/// A size in bytes: `1048576`, or with a suffix of 1024's powers, `512K`, `100M`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        other => return Err(format!("unknown size unit `{other}` (use K, M or G)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 100M)"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("a size of 0 would roll at every line".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("10T").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
