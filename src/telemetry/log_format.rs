//! One JSON object per line in the shape Cloud Logging's agent understands:
//! `severity` and `message` become the entry's severity and summary, and the
//! `logging.googleapis.com/*` fields join the entry to its Cloud Trace span.
//! See <https://cloud.google.com/logging/docs/structured-logging>.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::request;

pub const TRACE_FIELD: &str = "logging.googleapis.com/trace";
pub const SPAN_ID_FIELD: &str = "logging.googleapis.com/spanId";
pub const SAMPLED_FIELD: &str = "logging.googleapis.com/trace_sampled";
pub const LABELS_FIELD: &str = "logging.googleapis.com/labels";
/// Event fields named `httpRequest.<field>` become Cloud Logging's
/// `httpRequest` object, which Logs Explorer shows as the request line.
const HTTP_REQUEST_PREFIX: &str = "httpRequest.";

pub struct CloudLoggingJson {
    /// The Google Cloud project whose Cloud Trace holds the spans; the trace
    /// field must name it (`projects/$PROJECT/traces/$TRACE_ID`).
    pub project: Option<String>,
}

/// Cloud Logging's severity names.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut entry = Map::new();
        entry.insert("severity".into(), severity(metadata.level()).into());
        let message = fields.0.remove("message").unwrap_or(Value::from(""));
        entry.insert("message".into(), message);
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        entry.insert("time".into(), time.into());
        entry.insert("target".into(), metadata.target().into());
        if let Some(span) = ctx.lookup_current() {
            entry.insert("span".into(), span.name().into());
        }
        // The request this event belongs to, when it happened while serving one.
        if let Some((request_id, tenant)) = request::current_ids() {
            entry.insert("request_id".into(), request_id.into());
            if let Some(tenant) = tenant {
                // Labels are indexed: Logs Explorer filters on them cheaply.
                entry.insert(LABELS_FIELD.into(), serde_json::json!({ "tenant": tenant }));
                entry.insert("tenant".into(), tenant.into());
            }
        }
        // The span the event happened in (the tracing-opentelemetry layer
        // makes it the current OpenTelemetry context while it is entered).
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            let trace_id = span_context.trace_id().to_string();
            if let Some(project) = &self.project {
                entry.insert(
                    TRACE_FIELD.into(),
                    format!("projects/{project}/traces/{trace_id}").into(),
                );
            }
            entry.insert("trace_id".into(), trace_id.into());
            entry.insert(
                SPAN_ID_FIELD.into(),
                span_context.span_id().to_string().into(),
            );
            entry.insert(SAMPLED_FIELD.into(), span_context.is_sampled().into());
        }
        if let (Some(file), Some(line)) = (metadata.file(), metadata.line()) {
            entry.insert(
                "logging.googleapis.com/sourceLocation".into(),
                serde_json::json!({"file": file, "line": line.to_string(), "function": metadata.module_path().unwrap_or("")}),
            );
        }
        // The event's own fields, unless they would shadow the ones above.
        let mut http_request = Map::new();
        for (key, value) in fields.0 {
            match key.strip_prefix(HTTP_REQUEST_PREFIX) {
                Some(field) => {
                    http_request.insert(field.to_string(), value);
                }
                None => {
                    entry.entry(key).or_insert(value);
                }
            }
        }
        if !http_request.is_empty() {
            entry.insert("httpRequest".into(), Value::Object(http_request));
        }
        writeln!(writer, "{}", Value::Object(entry))
    }
}

/// Collects an event's fields as JSON values (numbers stay numbers).
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_cloud_logging_severities() {
        assert_eq!(severity(&Level::ERROR), "ERROR");
        assert_eq!(severity(&Level::WARN), "WARNING");
        assert_eq!(severity(&Level::INFO), "INFO");
        assert_eq!(severity(&Level::DEBUG), "DEBUG");
        assert_eq!(severity(&Level::TRACE), "DEBUG");
    }
}
