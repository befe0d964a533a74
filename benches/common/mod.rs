//! Helpers shared by the process-level benches (`roundtrip`, `membership`, `caches`).

pub mod nodes;
pub mod process;

use std::time::{Duration, Instant};

use anyhow::Context;

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

/// `a`'s `q`-quantile over `b`'s.
pub fn ratio(a: &[Duration], b: &[Duration], q: f64) -> f64 {
    quantile(a, q).as_secs_f64() / quantile(b, q).as_secs_f64()
}

/// Sorts `values` and returns their median (NaN when empty).
pub fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One batch of timed operations, as a role process reports it to the bench's orchestrator.
#[derive(Debug, Default)]
pub struct Batch {
    /// The time of each timed operation that succeeded.
    pub samples: Vec<Duration>,
    /// Timed operations that failed.
    pub errors: usize,
    /// In a paired batch, the times of the reference operation timed alternately with these,
    /// one before each, so that both see the machine in the same state; empty otherwise.
    pub reference: Vec<Duration>,
}

impl Batch {
    /// Records an operation that started at `start` and just ended: its time if `ok`, else an
    /// error.
    pub fn record(&mut self, start: Instant, ok: bool) {
        if ok {
            self.samples.push(start.elapsed());
        } else {
            self.errors += 1;
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        let nanos = |samples: &[Duration]| -> Vec<u64> {
            samples.iter().map(|d| d.as_nanos() as u64).collect()
        };
        let mut value =
            serde_json::json!({ "samples_ns": nanos(&self.samples), "errors": self.errors });
        if !self.reference.is_empty() {
            value["reference_ns"] = nanos(&self.reference).into();
        }
        value.to_string()
    }

    /// Reads what [`Self::to_json`] wrote.
    ///
    /// # Errors
    /// `line` is not such a batch.
    pub fn from_json(line: &str) -> anyhow::Result<Batch> {
        let value: serde_json::Value = serde_json::from_str(line).context("batch output")?;
        let durations = |field: &str, required: bool| -> anyhow::Result<Vec<Duration>> {
            match value.get(field) {
                None if !required => Ok(Vec::new()),
                nanos => nanos
                    .and_then(serde_json::Value::as_array)
                    .with_context(|| field.to_owned())?
                    .iter()
                    .map(|n| n.as_u64().map(Duration::from_nanos).context("a sample"))
                    .collect(),
            }
        };
        // Every batch has samples; only a paired one has a reference.
        let samples = durations("samples_ns", true)?;
        let reference = durations("reference_ns", false)?;
        let errors = value["errors"].as_u64().context("errors")? as usize;
        Ok(Batch {
            samples,
            errors,
            reference,
        })
    }
}

/// `d` in milliseconds with one decimal, for reports.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `d` in microseconds with one decimal, for reports.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// The value of the numeric option `flag`.
///
/// # Errors
/// `value` is not a number.
pub fn number(flag: &str, value: &str) -> anyhow::Result<usize> {
    value.parse().with_context(|| format!("{flag} {value}"))
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

/// Runs `call(0)` to `call(n - 1)`, `conc` at a time on the runtime; each call's time is a
/// sample of the batch returned, a `false` an error.
pub async fn concurrently<F, Fut>(n: usize, conc: usize, call: F) -> Batch
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (next, call) = (Arc::new(AtomicUsize::new(0)), Arc::new(call));
    let mut tasks = Vec::new();
    for _ in 0..conc.max(1) {
        let (next, call) = (next.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut batch = Batch::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return batch;
                }
                let start = Instant::now();
                let ok = call(i).await;
                batch.record(start, ok);
            }
        }));
    }
    let mut all = Batch::default();
    for task in tasks {
        if let Ok(b) = task.await {
            all.samples.extend(b.samples);
            all.errors += b.errors;
        }
    }
    all
}

/// This process's resident set in bytes.
///
/// # Errors
/// `/proc/self/status` could not be read.
pub fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// Now on the wall clock, in µs since the epoch (one machine: every process's clock is the
/// same).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
