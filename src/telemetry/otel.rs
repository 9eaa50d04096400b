//! The OpenTelemetry side: tracer provider, OTLP/gRPC exporter, resource,
//! and the W3C `traceparent` carriers for HTTP headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

/// Where spans go: set by the standard variables; without one, spans are still
/// made (logs carry their ids and responses their `traceparent`) but not sent.
pub fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok())
    .find(|value| !value.trim().is_empty())
}

/// Builds the provider. Must run inside the tokio runtime: the batch
/// processor is a task on it, since the tonic exporter needs a reactor (the
/// SDK's thread-based batch processor has none and its exports fail).
///
/// The sampler comes from `OTEL_TRACES_SAMPLER[_ARG]` (the SDK reads them;
/// default parent-based always-on, so a caller's sampling decision is kept).
pub fn tracer_provider() -> anyhow::Result<(SdkTracerProvider, Option<String>)> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource());
    let endpoint = otlp_endpoint();
    if endpoint.is_some() {
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        // Only gRPC is built in; an http/protobuf endpoint would fail quietly.
        anyhow::ensure!(
            protocol.is_empty() || protocol == "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: pyexec exports OTLP over gRPC (port 4317)"
        );
        // The builder reads the endpoint, timeout and headers from the
        // standard OTEL_EXPORTER_OTLP_* variables itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        builder = builder.with_span_processor(processor);
    }
    Ok((builder.build(), endpoint))
}

/// Service name and version, plus the Cloud Run identity when there is one.
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read by the SDK's
/// detectors and win over our defaults.
fn resource() -> Resource {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut builder = Resource::builder();
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named_by_env {
        builder = builder.with_service_name(env("K_SERVICE").unwrap_or_else(|| "pyexec".into()));
    }
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    // Cloud Run sets K_SERVICE/K_REVISION; Cloud Trace shows them per span.
    if let Some(service) = env("K_SERVICE") {
        attributes.push(KeyValue::new("cloud.provider", "gcp"));
        attributes.push(KeyValue::new("cloud.platform", "gcp_cloud_run"));
        attributes.push(KeyValue::new("faas.name", service));
        if let Some(revision) = env("K_REVISION") {
            attributes.push(KeyValue::new("faas.version", revision.clone()));
            attributes.push(KeyValue::new("service.instance.id", revision));
        }
    }
    // The environment's own attributes are applied last so they win.
    builder
        .with_attributes(attributes)
        .with_detector(Box::new(
            opentelemetry_sdk::resource::EnvResourceDetector::new(),
        ))
        .build()
}

/// Reads W3C trace context from request headers.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into response headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; leave the header out.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
