//! Helpers shared by the process-level benches (`roundtrip`, `membership`).

use std::time::Duration;

/// The `q`-quantile (0.0..=1.0) of `samples` by the nearest-rank method; zero when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `samples`; see [`quantile`].
pub fn median(samples: &[Duration]) -> Duration {
    quantile(samples, 0.5)
}

/// `d` in milliseconds with one decimal, for reports.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `d` in microseconds with one decimal, for reports.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// How a bench binary was invoked.
pub struct Invocation {
    /// Whether cargo asked for a measurement (`cargo bench` passes `--bench`). Without it the
    /// binary runs as a test (`cargo test --benches`), and should only do a quick smoke run.
    pub measure: bool,
    /// The `--name value` options, in order.
    pub options: Vec<(String, String)>,
}

/// How the bench binary `bench` was invoked, or `None` when the command line selects other
/// benches: `cargo bench <filter>` passes the filter to every bench binary, and, as with
/// libtest, a bench runs only if its name contains one of the filters.
///
/// # Errors
/// An option without a value.
pub fn invocation(
    bench: &str,
    args: impl IntoIterator<Item = String>,
) -> anyhow::Result<Option<Invocation>> {
    let mut invocation = Invocation {
        measure: false,
        options: Vec::new(),
    };
    let mut filters = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--bench" {
            invocation.measure = true;
        } else if arg.starts_with("--") {
            let value = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
            invocation.options.push((arg, value));
        } else {
            filters.push(arg);
        }
    }
    let selected = filters.is_empty() || filters.iter().any(|f| bench.contains(f.as_str()));
    Ok(selected.then_some(invocation))
}
