//! Logs, traces and metrics set-up: JSON logs (text on a terminal), OpenTelemetry traces over OTLP
//! when an endpoint is configured, and the Prometheus recorder.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use settings::LogFormat;

/// Where traces go: an OTLP/HTTP endpoint, and what the spans say about this process.
pub struct TraceExport {
    /// `http://collector:4318`; spans are posted to `{endpoint}/v1/traces`.
    pub endpoint: String,
    pub region: String,
}

/// The tracer provider, kept to flush and stop it at exit.
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). With `traces`, every span
/// is also exported over OTLP (batched, in a thread of its own). Safe to call twice.
pub fn init_logging(format: LogFormat, traces: Option<TraceExport>) {
    const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn";
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // A panic outside the runtime's tasks ends the process: the lines before it go out first.
    static HOOKED: OnceLock<()> = OnceLock::new();
    HOOKED.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let buffer = log_buffer();
            if let Ok(mut lines) = buffer.lines.try_lock() {
                let lines = std::mem::take(&mut *lines);
                write_lines(buffer, &lines);
            }
            default(info);
        }));
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(log_writer());
    let fmt = if json {
        fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(filter);
    // The spans of store calls (target `store`) are for traces only: the log lines keep the
    // request's or the event's span, with its ids, as their current span.
    let fmt =
        fmt.with_filter(tracing_subscriber::filter::filter_fn(|meta| !(meta.is_span() && meta.target() == "store")));
    let (otel, export_error) = match traces.map(tracer) {
        // Its own filter: RUST_LOG tunes the log lines, not which spans a trace has.
        Some(Ok(tracer)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(EnvFilter::new(DEFAULT_FILTER));
            (Some(layer), None)
        }
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    if let Some(e) = export_error {
        tracing::error!(error = format!("{e:#}"), "traces are not exported: the OTLP exporter could not be built");
    }
}

/// The OTLP exporter, its batching provider (installed in [`TRACER`]) and a tracer from it.
fn tracer(export: TraceExport) -> anyhow::Result<opentelemetry_sdk::trace::Tracer> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let endpoint = format!("{}/v1/traces", export.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("walletd")
        .with_attribute(opentelemetry::KeyValue::new("walletd.region", export.region))
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("walletd");
    let _ = TRACER.set(provider);
    Ok(tracer)
}

/// Exports the spans still waiting in the batch and stops the exporter (at exit, after the
/// runtime, so spans that end while its tasks stop are included).
pub fn shutdown_traces() {
    if let Some(provider) = TRACER.get() {
        let _ = provider.shutdown();
    }
}

/// Log lines are appended to a buffer that one thread writes to stderr every few milliseconds (at
/// once when it fills): a request's line costs a copy under a short lock, where a write to stderr
/// per line made the runtime's threads queue on stderr's lock (a futex wait and a context switch
/// per request; docs/performance.md). A line reaches stderr at most
/// `LOG_FLUSH_EVERY` late; [`flush_logs`] writes what is buffered (walletd calls it before it exits).
#[derive(Default)]
struct LogBuffer {
    lines: Mutex<Vec<u8>>,
    full: Condvar,
    dropped: AtomicU64,
}

const LOG_FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Written at once past this; lines beyond `LOG_BUFFER_MAX` (stderr blocked) are dropped and counted.
const LOG_BUFFER_SOON: usize = 256 * 1024;
const LOG_BUFFER_MAX: usize = 16 * 1024 * 1024;

fn log_buffer() -> &'static Arc<LogBuffer> {
    static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(LogBuffer::default());
        let writer = buffer.clone();
        let started = std::thread::Builder::new().name("log-writer".into()).spawn(move || {
            loop {
                let lines = {
                    let guard = writer.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (mut guard, _) = writer
                        .full
                        .wait_timeout_while(guard, LOG_FLUSH_EVERY, |l| l.len() < LOG_BUFFER_SOON)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    std::mem::take(&mut *guard)
                };
                write_lines(&writer, &lines);
            }
        });
        if started.is_err() {
            eprintln!("walletd: cannot start the log writer thread; logs are written by flush_logs only");
        }
        buffer
    })
}

fn write_lines(buffer: &LogBuffer, lines: &[u8]) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(lines);
    let dropped = buffer.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            stderr,
            "{{\"level\":\"WARN\",\"message\":\"{dropped} log lines dropped: stderr did not keep up\"}}"
        );
    }
}

/// Writes the buffered log lines now.
pub fn flush_logs() {
    let buffer = log_buffer();
    let lines = std::mem::take(&mut *buffer.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    write_lines(buffer, &lines);
}

struct BufferedLog(&'static LogBuffer);

impl Write for BufferedLog {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.len() + line.len() > LOG_BUFFER_MAX {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
            if lines.len() >= LOG_BUFFER_SOON {
                self.0.full.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_writer() -> impl for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static {
    let buffer: &'static LogBuffer = log_buffer();
    move || BufferedLog(buffer)
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    // Under a lock: two builds in one process (tests run many at once) must not both find no
    // handle and both install, the second failing.
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = HANDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = &*installed {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".into()),
            &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )?
        // Without buckets a histogram is exported as a summary (no `_bucket` series), and the
        // dashboard's processing-lag quantile over all instances would have nothing to work on.
        .set_buckets_for_metric(
            Matcher::Full("claim_processing_lag_seconds".into()),
            &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        )?
        .install_recorder()?;
    metrics::gauge!("walletd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(installed.insert(handle).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_whole_and_past_the_cap_dropped_and_counted() {
        let buffer: &'static LogBuffer = Box::leak(Box::default());
        let mut log = BufferedLog(buffer);
        log.write_all(b"{\"message\":\"one\"}\n").expect("buffered");
        log.write_all(b"{\"message\":\"two\"}\n").expect("buffered");
        assert_eq!(&*buffer.lines.lock().expect("lock"), b"{\"message\":\"one\"}\n{\"message\":\"two\"}\n");
        // A line that would pass the cap is dropped whole, counted, and reported with the next write.
        let big = vec![b'x'; LOG_BUFFER_MAX];
        assert_eq!(log.write(&big).expect("accepted"), big.len());
        assert_eq!(buffer.lines.lock().expect("lock").len(), 36, "nothing of the dropped line is kept");
        assert_eq!(buffer.dropped.load(Ordering::Relaxed), 1);
        write_lines(buffer, &std::mem::take(&mut *buffer.lines.lock().expect("lock")));
        assert_eq!(buffer.dropped.load(Ordering::Relaxed), 0, "the count goes out with the next write");
    }
}
