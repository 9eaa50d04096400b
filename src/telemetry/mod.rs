//! Telemetry: tracing spans exported over OTLP (to a collector that sends
//! them to Google Cloud Trace), logs for Cloud Logging (one JSON object per
//! line) or a person (text), and Prometheus metrics.
//!
//! - [`init`] installs the subscriber and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set, the exporter; [`Telemetry::shutdown`] flushes the spans.
//! - [`request`] is the server span middleware and the per-request context.
//! - [`spans`] has one function per stage span.
//! - [`metrics`] is the process-wide registry behind `GET /metrics`.

pub mod log_format;
pub mod metrics;
pub mod otel;
pub mod request;
pub mod spans;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

pub use metrics::{RedisSample, WarmPoolSample, metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// JSON unless a person is watching the terminal.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    pub log_format: LogFormat,
    /// Keeps a command's own output (`pyexec run`'s JSON) alone on stdout.
    pub to_stderr: bool,
    /// The Google Cloud project, for the log lines' trace field.
    pub gcp_project: Option<String>,
    /// Warnings and errors only (unless `PYEXEC_LOG` says otherwise).
    pub quiet: bool,
}

/// Keeps the tracer provider so its spans can be flushed at exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
    endpoint: Option<String>,
}

/// Dependencies chat at INFO about their own connections (including the span
/// exporter's): only their warnings are worth a line or a span.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,hyper_util=warn,tonic=warn,tower=warn";

/// Installs the global subscriber. Call it inside the tokio runtime (the span
/// exporter's batch task runs on it), once per process.
pub fn init(options: TelemetryOptions) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, endpoint, exporter_error) = match otel::tracer_provider() {
        Ok((provider, endpoint)) => (provider, endpoint, None),
        // A bad exporter setting must not stop the service: run without it.
        Err(e) => (SdkTracerProvider::builder().build(), None, Some(e)),
    };
    // Spans are made even without an exporter, so logs and responses carry
    // trace ids that a caller's own tracing can use.
    // Only the attributes the code sets: none of tracing's own bookkeeping
    // (busy/idle time, source location, target, thread, level).
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pyexec"))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_target(false)
        .with_level(false);
    let filter = EnvFilter::try_from_env("PYEXEC_LOG").unwrap_or_else(|_| {
        EnvFilter::new(if options.quiet {
            "warn"
        } else {
            DEFAULT_FILTER
        })
    });
    let to_stderr = options.to_stderr;
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let (json, text) = match options.log_format {
        LogFormat::Json => (
            Some(
                fmt::layer()
                    .with_writer(writer)
                    .event_format(log_format::CloudLoggingJson {
                        project: options.gcp_project.clone(),
                    }),
            ),
            None,
        ),
        LogFormat::Text => {
            use std::io::IsTerminal;
            // Colours only for a person; escape codes in a file are noise.
            let ansi = if to_stderr {
                std::io::stderr().is_terminal()
            } else {
                std::io::stdout().is_terminal()
            };
            (None, Some(fmt::layer().with_writer(writer).with_ansi(ansi)))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .with(otel_layer)
        .try_init();
    if let Some(e) = exporter_error {
        tracing::error!(error = %e, "the OTLP span exporter could not be set up; spans are not exported");
    } else if let Some(endpoint) = &endpoint {
        tracing::info!(endpoint = %endpoint, "exporting spans over OTLP/gRPC");
    }
    Telemetry { provider, endpoint }
}

impl Telemetry {
    /// Sends the spans still in the batch. Bounded, since the platform kills
    /// the process soon after SIGTERM (Cloud Run: 10 s).
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The SDK blocks on the batch task's answer, so it must not block a
        // runtime worker the task may need.
        let flushed = tokio::time::timeout(
            crate::defaults::SPAN_FLUSH_TIMEOUT,
            tokio::task::spawn_blocking(move || provider.shutdown()),
        )
        .await;
        if self.endpoint.is_some() {
            match flushed {
                Ok(Ok(Ok(()))) => tracing::info!("spans flushed"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing spans failed"),
                _ => tracing::warn!("flushing spans took too long; some may be lost"),
            }
        }
    }
}
