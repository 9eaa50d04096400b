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
    let on_cloud_run = env("K_SERVICE").is_some();
    let cloud_run_instance = on_cloud_run.then(cloud_run_instance_id).flatten();
    if let Some(service) = env("K_SERVICE") {
        attributes.push(KeyValue::new("cloud.provider", "gcp"));
        attributes.push(KeyValue::new("cloud.platform", "gcp_cloud_run"));
        attributes.push(KeyValue::new("faas.name", service));
        if let Some(revision) = env("K_REVISION") {
            attributes.push(KeyValue::new("faas.version", revision));
        }
        if let Some(instance) = &cloud_run_instance {
            attributes.push(KeyValue::new("faas.instance", instance.clone()));
        }
    }
    // One per process: every instance of a revision used to share the
    // revision's name here, so their spans could not be told apart.
    let instance_id = cloud_run_instance.unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
    attributes.push(KeyValue::new("service.instance.id", instance_id));
    // The environment's own attributes are applied last so they win.
    builder
        .with_attributes(attributes)
        .with_detector(Box::new(
            opentelemetry_sdk::resource::EnvResourceDetector::new(),
        ))
        .build()
}

/// The Cloud Run instance's id from the metadata server, which every
/// instance has; `None` off Google Cloud (the address does not answer within
/// a fraction of a second) or on any unexpected answer.
fn cloud_run_instance_id() -> Option<String> {
    use std::io::{Read, Write};
    let metadata = std::net::SocketAddr::from(([169, 254, 169, 254], 80));
    let timeout = std::time::Duration::from_millis(300);
    let mut stream = std::net::TcpStream::connect_timeout(&metadata, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(
            b"GET /computeMetadata/v1/instance/id HTTP/1.0\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n",
        )
        .ok()?;
    let mut response = String::new();
    stream.take(4096).read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let id = body.trim();
    let ok = head.split(' ').nth(1) == Some("200")
        && !id.is_empty()
        && id.len() <= 256
        && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| id.to_string())
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
