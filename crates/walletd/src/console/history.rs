//! The last hour of walletd's own metrics, for the console's overview: a sample of the process's
//! Prometheus exposition every [`EVERY`], kept for an hour, read back as rates and gauges.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;

/// How often the metrics are sampled.
pub const EVERY: Duration = Duration::from_secs(5);
/// How far back the charts reach.
pub const SPAN: Duration = Duration::from_secs(3600);

/// The series the overview reads; the others are not kept.
pub const SHOWN: &[&str] = &[
    "claims_total",
    "claims_processed_total",
    "claim_processing_lag_seconds_sum",
    "claim_processing_lag_seconds_count",
    "outbox_unpublished",
    "events_consumer_lag",
    "db_breaker_open",
    "cache_breaker_open",
    "rpc_client_breaker_open",
];

/// One reading of the series the overview shows: `name{labels}` to its value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    values: HashMap<String, f64>,
}

impl Sample {
    /// Reads the Prometheus text format: every line that is not a comment is `series value`. Only
    /// the series the overview shows are kept ([`SHOWN`]): an hour of every histogram bucket of
    /// every route would be far more than the charts need.
    pub fn parse(at: Instant, text: &str) -> Self {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#') && SHOWN.contains(&series_name(l.split(' ').next().unwrap_or(""))))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.trim().to_string(), value.parse::<f64>().ok()?))
            })
            .collect();
        Self { at, values }
    }

    /// The sum of `name`'s series that carry every label of `labels` (`outcome="won"`, ...).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.values
            .iter()
            .filter(|(k, _)| series_name(k) == name && labels.iter().all(|l| k.contains(l)))
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .sum()
    }

    /// Whether any series of `name` exists (a gauge only some configurations export).
    pub fn has(&self, name: &str) -> bool {
        self.values.keys().any(|k| series_name(k) == name)
    }

    /// `name`'s series, by the value of `label` (e.g. consumer lag per `group`).
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut out: HashMap<String, f64> = HashMap::new();
        for (k, v) in &self.values {
            if series_name(k) != name || !v.is_finite() {
                continue;
            }
            if let Some(value) = label_value(k, label) {
                *out.entry(value).or_default() += v;
            }
        }
        let mut out: Vec<_> = out.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn series_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

fn label_value(series: &str, label: &str) -> Option<String> {
    let labels = series.split_once('{')?.1.trim_end_matches('}');
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The samples of the last hour, oldest first.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    handle: PrometheusHandle,
}

impl History {
    /// The process's history, sampling from its first use on (metrics are process-wide, so is this),
    /// on a thread of its own: it outlives any one runtime (tests run several in one process).
    pub fn get(handle: PrometheusHandle) -> &'static History {
        static HISTORY: OnceLock<&'static History> = OnceLock::new();
        HISTORY.get_or_init(|| {
            let history: &'static History =
                Box::leak(Box::new(History { samples: Mutex::new(VecDeque::new()), handle }));
            history.take();
            let sampler = std::thread::Builder::new().name("console-metrics".into()).spawn(move || {
                loop {
                    std::thread::sleep(EVERY);
                    history.take();
                }
            });
            if let Err(e) = sampler {
                tracing::warn!(error = %e, "no metrics sampler: the console's charts fill only while viewed");
            }
            history
        })
    }

    /// Samples now and keeps it, dropping what is older than [`SPAN`].
    fn take(&self) {
        let sample = self.now();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        while samples.front().is_some_and(|s| sample.at.duration_since(s.at) > SPAN) {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// A fresh reading, not kept.
    pub fn now(&self) -> Sample {
        Sample::parse(Instant::now(), &self.handle.render())
    }

    /// The kept samples and a fresh one at the end.
    pub fn with_now(&self) -> Vec<Sample> {
        // Without its sampler (it could not start), the history fills while someone looks.
        if self.samples.lock().unwrap_or_else(|e| e.into_inner()).back().is_none_or(|s| s.at.elapsed() > EVERY * 2) {
            self.take();
        }
        let mut all: Vec<Sample> = self.samples.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        all.push(self.now());
        all
    }
}

/// Per-minute rates of a counter between consecutive samples: one point per interval.
pub fn rate_per_minute(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Vec<f64> {
    samples
        .windows(2)
        .map(|w| {
            let secs = w[1].at.duration_since(w[0].at).as_secs_f64();
            // A counter that went down was reset (a restart): count from zero.
            let delta = (value(&w[1]) - value(&w[0])).max(0.0);
            if secs > 0.0 { delta * 60.0 / secs } else { 0.0 }
        })
        .collect()
}

/// The rate over the last minute (or the span the samples cover, when shorter), per minute.
pub fn last_minute(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let Some(last) = samples.last() else { return 0.0 };
    let first = samples.iter().find(|s| last.at.duration_since(s.at) <= Duration::from_secs(60)).unwrap_or(last);
    let secs = last.at.duration_since(first.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (value(last) - value(first)).max(0.0) * 60.0 / secs
}

/// The mean of a histogram over each interval (`sum` delta over `count` delta), 0 when nothing was
/// recorded in it.
pub fn mean_per_interval(samples: &[Sample], name: &str) -> Vec<f64> {
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    samples
        .windows(2)
        .map(|w| {
            let n = w[1].sum(&count, &[]) - w[0].sum(&count, &[]);
            if n > 0.0 { (w[1].sum(&sum, &[]) - w[0].sum(&sum, &[])) / n } else { 0.0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE claims_total counter
claims_total{outcome="won",region="local"} 7
claims_total{outcome="lost",region="local"} 3
events_consumer_lag{group="claim-processor"} 4
events_consumer_lag{group="cache-invalidator"} 0
claim_processing_lag_seconds_sum 1.5
claim_processing_lag_seconds_count 3
"#;

    #[test]
    fn sums_series_by_label_and_reads_one_label() {
        let s = Sample::parse(Instant::now(), TEXT);
        assert_eq!(s.sum("claims_total", &[]), 10.0);
        assert_eq!(s.sum("claims_total", &["outcome=\"won\""]), 7.0);
        assert_eq!(s.sum("claims", &[]), 0.0, "a prefix is not a series");
        let unshown = Sample::parse(Instant::now(), "http_requests_total{route=\"/v1/orders\"} 3\n");
        assert!(!unshown.has("http_requests_total"), "only the shown series are kept");
        assert_eq!(
            s.by_label("events_consumer_lag", "group"),
            vec![("cache-invalidator".to_string(), 0.0), ("claim-processor".to_string(), 4.0)]
        );
    }

    #[test]
    fn rates_are_per_minute_and_survive_a_reset() {
        let t0 = Instant::now();
        let at = |secs: u64, won: u64| {
            Sample::parse(t0 + Duration::from_secs(secs), &format!("claims_total{{outcome=\"won\"}} {won}\n"))
        };
        let samples = vec![at(0, 0), at(30, 10), at(60, 40), at(90, 5)];
        let won = |s: &Sample| s.sum("claims_total", &[]);
        assert_eq!(rate_per_minute(&samples, won), vec![20.0, 60.0, 0.0]);
        // The last minute: from the sample at 30 s to the one at 90 s, reset to 5: no negative rate.
        assert_eq!(last_minute(&samples, won), 0.0);
        assert_eq!(last_minute(&samples[..3], won), 40.0);
    }

    #[test]
    fn histogram_means_per_interval() {
        let t0 = Instant::now();
        let text = |sum: u32, count: u32| {
            format!("claim_processing_lag_seconds_sum {sum}\nclaim_processing_lag_seconds_count {count}\n")
        };
        let a = Sample::parse(t0, &text(1, 2));
        let b = Sample::parse(t0 + EVERY, &text(4, 5));
        let c = Sample::parse(t0 + EVERY * 2, &text(4, 5));
        assert_eq!(mean_per_interval(&[a, b, c], "claim_processing_lag_seconds"), vec![1.0, 0.0]);
    }
}
