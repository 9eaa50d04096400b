//! Observability of the real binary: the spans an OTLP collector receives, the
//! Cloud Logging JSON on stdout, the Prometheus metrics and graceful shutdown.
//!
//! Each test spawns `pyexec serve` (the tracing subscriber and the span
//! exporter are per process) and, where spans matter, points its exporter at
//! an OTLP/gRPC receiver running in the test: the real `TraceService` of the
//! OpenTelemetry protocol, recording every export request it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{API_KEY, SpawnedServer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Strings that must never leave the process in telemetry.
const SCRIPT_MARKER: &str = "SCRIPT_MARKER_5f2c9e";
const ARG_MARKER: &str = "ARG_MARKER_a81b07";
const OUTPUT_MARKER: &str = "OUTPUT_MARKER_3d6e41";

#[derive(Clone, Default)]
struct Receiver {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.exports.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.exports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// The spans of one trace, once one named `last` has arrived.
    async fn wait_for_trace(&self, trace_id: &[u8], last: &str) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if spans.iter().any(|s| s.name == last) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no `{last}` span arrived; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The string attributes of the first export's resource.
    fn resource(&self) -> std::collections::HashMap<String, String> {
        let exports = self.exports.lock().unwrap();
        let resource = exports[0].resource_spans[0].resource.clone().unwrap();
        resource
            .attributes
            .into_iter()
            .filter_map(|kv| match kv.value?.value? {
                AnyValue::StringValue(s) => Some((kv.key, s)),
                _ => None,
            })
            .collect()
    }

    /// Everything received, as text, for "never appears anywhere" checks.
    fn everything(&self) -> String {
        format!("{:?}", self.exports.lock().unwrap())
    }
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        AnyValue::StringValue(s) => Some(s),
        other => Some(format!("{other:?}")),
    }
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        AnyValue::IntValue(n) => Some(n),
        _ => None,
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no `{name}` span among {:?}", names(spans)))
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// A fresh W3C trace context: (header, trace id bytes, parent span id bytes).
fn traceparent() -> (String, Vec<u8>, Vec<u8>) {
    let trace_id: [u8; 16] = rand_bytes();
    let span_id: [u8; 8] = rand_bytes();
    (
        format!("00-{}-{}-01", hex::encode(trace_id), hex::encode(span_id)),
        trace_id.to_vec(),
        span_id.to_vec(),
    )
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    for b in bytes.iter_mut() {
        *b = rand::random();
    }
    bytes
}

fn marked_script() -> String {
    format!(
        "def main(word):\n    # {SCRIPT_MARKER}\n    print('{OUTPUT_MARKER}')\n    return {{'echo': word}}\n"
    )
}

async fn execute_traced(
    server: &SpawnedServer,
    script: &str,
    args: Value,
    traceparent: &str,
) -> crate::common::Response {
    let response = server
        .api
        .client
        .post(server.api.url("/execute"))
        .bearer_auth(API_KEY)
        .header("traceparent", traceparent)
        .json(&json!({"script": script, "args": args}))
        .send()
        .await
        .expect("request is answered");
    crate::common::Response::read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_spans_continue_the_callers_trace_and_carry_no_script_args_output_or_key() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    let server = SpawnedServer::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "pyexec-under-test"),
    ]);
    let (header, trace_id, caller_span_id) = traceparent();
    let script = marked_script();
    let response = execute_traced(&server, &script, json!({"word": ARG_MARKER}), &header).await;
    assert_eq!(response.assert_ok()["echo"], ARG_MARKER);

    // The response names the same trace, with our server span as its parent.
    let returned = response.header("traceparent").expect("traceparent header");
    assert!(
        returned.contains(&hex::encode(&trace_id)),
        "{returned} does not continue {header}"
    );

    let spans = receiver.wait_for_trace(&trace_id, "POST /execute").await;
    let server_span = named(&spans, "POST /execute");
    assert_eq!(
        server_span.parent_span_id, caller_span_id,
        "the caller's span is the parent"
    );
    assert_eq!(server_span.kind, SpanKind::Server as i32);
    assert!(returned.contains(&hex::encode(&server_span.span_id)));
    for stage in [
        "authenticate",
        "validate",
        "rate_limit",
        "quota",
        "cache.lookup",
        "sandbox.queue",
        "sandbox.run",
    ] {
        assert_eq!(
            named(&spans, stage).parent_span_id,
            server_span.span_id,
            "`{stage}` is a child of the server span"
        );
    }

    let sha = hex::encode(&Sha256::digest(script.as_bytes())[..8]);
    assert_eq!(
        string_attribute(server_span, "pyexec.tenant").as_deref(),
        Some("default")
    );
    assert_eq!(
        string_attribute(server_span, "pyexec.script.sha256_prefix"),
        Some(sha.clone())
    );
    assert_eq!(
        string_attribute(server_span, "pyexec.outcome").as_deref(),
        Some("success")
    );
    assert_eq!(
        int_attribute(server_span, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        string_attribute(server_span, "http.route").as_deref(),
        Some("/execute")
    );
    // The HTTP server conventions, by the names the conventions' own crate
    // defines.
    use opentelemetry_semantic_conventions::trace as semconv;
    let text = |key: &str| string_attribute(server_span, key);
    assert_eq!(text(semconv::HTTP_REQUEST_METHOD).as_deref(), Some("POST"));
    assert_eq!(text(semconv::URL_PATH).as_deref(), Some("/execute"));
    assert_eq!(text(semconv::URL_SCHEME).as_deref(), Some("http"));
    assert_eq!(text(semconv::SERVER_ADDRESS).as_deref(), Some("127.0.0.1"));
    assert!(int_attribute(server_span, semconv::SERVER_PORT).is_some_and(|p| p > 0));
    assert_eq!(
        text(semconv::NETWORK_PROTOCOL_VERSION).as_deref(),
        Some("1.1")
    );
    assert_eq!(text(semconv::CLIENT_ADDRESS).as_deref(), Some("127.0.0.1"));
    assert!(text(semconv::USER_AGENT_ORIGINAL).is_some());
    assert!(int_attribute(server_span, "http.request.body.size").is_some_and(|n| n > 0));
    assert!(int_attribute(server_span, "http.response.body.size").is_some_and(|n| n > 0));
    // Ours are under `pyexec.`, and none of tracing's bookkeeping is exported.
    for span in &spans {
        for attribute in &span.attributes {
            let key = attribute.key.as_str();
            assert!(
                ![
                    "busy_ns",
                    "idle_ns",
                    "target",
                    "thread.id",
                    "thread.name",
                    "level"
                ]
                .contains(&key)
                    && !key.starts_with("code."),
                "`{key}` on `{}`",
                span.name
            );
            let standard = [
                "http.",
                "url.",
                "server.",
                "client.",
                "network.",
                "user_agent.",
                "error.",
                "otel.",
            ];
            assert!(
                key.starts_with("pyexec.") || standard.iter().any(|p| key.starts_with(p)),
                "`{key}` on `{}` is neither a convention's nor under pyexec.",
                span.name
            );
        }
    }

    let run = named(&spans, "sandbox.run");
    assert_eq!(
        string_attribute(run, "pyexec.outcome").as_deref(),
        Some("success")
    );
    assert_eq!(
        string_attribute(run, "pyexec.script.sha256_prefix"),
        Some(sha)
    );
    assert!(matches!(
        string_attribute(run, "pyexec.sandbox.mode").as_deref(),
        Some("warm" | "cold")
    ));
    assert!(int_attribute(run, "pyexec.sandbox.peak_memory_bytes").is_some_and(|b| b > 0));
    assert!(int_attribute(run, "pyexec.sandbox.cpu_time_ms").is_some());
    assert_eq!(
        int_attribute(run, "pyexec.sandbox.stdout_bytes"),
        Some(OUTPUT_MARKER.len() as i64 + 1)
    );
    assert_eq!(
        string_attribute(named(&spans, "cache.lookup"), "pyexec.cache.result").as_deref(),
        Some("bypass")
    );
    assert_eq!(
        string_attribute(named(&spans, "authenticate"), "pyexec.tenant").as_deref(),
        Some("default")
    );

    // A path with no route: the span is named by its method alone, with no
    // http.route (the conventions' rule for an unmatched request).
    let (header, trace_id, _) = traceparent();
    let missing = server
        .api
        .client
        .get(server.api.url("/no-such-path"))
        .header("traceparent", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let spans = receiver.wait_for_trace(&trace_id, "GET").await;
    let unmatched = named(&spans, "GET");
    assert_eq!(string_attribute(unmatched, "http.route"), None);
    assert_eq!(
        string_attribute(unmatched, "url.path").as_deref(),
        Some("/no-such-path")
    );
    assert_eq!(
        int_attribute(unmatched, "http.response.status_code"),
        Some(404)
    );

    let everything = receiver.everything();
    assert!(
        everything.contains("pyexec-under-test"),
        "OTEL_SERVICE_NAME names the service"
    );
    assert!(everything.contains("service.version"));
    for secret in [
        SCRIPT_MARKER,
        ARG_MARKER,
        OUTPUT_MARKER,
        API_KEY,
        "def main",
    ] {
        assert!(!everything.contains(secret), "`{secret}` was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_marked_with_its_problem_type_and_signal_on_cloud_run() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    // As Cloud Run would start it: the service and revision in the environment.
    let server = SpawnedServer::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("K_SERVICE", "pyexec-svc"),
        ("K_REVISION", "pyexec-svc-00042-abc"),
    ]);
    let (header, trace_id, _) = traceparent();
    let script = "import ctypes\ndef main():\n    return ctypes.string_at(0)\n";
    let response = execute_traced(&server, script, json!({}), &header).await;
    response.assert_problem(422, "sandbox-killed");

    let spans = receiver.wait_for_trace(&trace_id, "POST /execute").await;
    let server_span = named(&spans, "POST /execute");
    assert_eq!(
        string_attribute(server_span, "pyexec.outcome").as_deref(),
        Some("sandbox-killed")
    );
    assert_eq!(
        string_attribute(server_span, "error.type").as_deref(),
        Some("sandbox-killed")
    );
    let run = named(&spans, "sandbox.run");
    assert_eq!(
        string_attribute(run, "pyexec.outcome").as_deref(),
        Some("sandbox-killed")
    );
    assert_eq!(
        int_attribute(run, "pyexec.sandbox.exit_signal"),
        Some(libc::SIGSEGV as i64)
    );

    let resource = receiver.resource();
    let get = |key: &str| resource.get(key).map(String::as_str);
    assert_eq!(get("service.name"), Some("pyexec-svc"));
    assert_eq!(get("faas.name"), Some("pyexec-svc"));
    assert_eq!(get("faas.version"), Some("pyexec-svc-00042-abc"));
    assert_eq!(get("cloud.platform"), Some("gcp_cloud_run"));
    assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
    // One id per process, not the revision every instance shares (off Google
    // Cloud the metadata server does not answer, so it is random).
    let instance = get("service.instance.id").expect("service.instance.id");
    assert_ne!(instance, "pyexec-svc-00042-abc");
    assert!(instance.len() == 32 && instance.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_json_with_severity_message_and_the_cloud_logging_trace_fields() {
    let mut server = SpawnedServer::start(&[("GOOGLE_CLOUD_PROJECT", "test-project")]);
    let (header, trace_id, _) = traceparent();
    let response = execute_traced(
        &server,
        &marked_script(),
        json!({"word": ARG_MARKER}),
        &header,
    )
    .await;
    response.assert_ok();
    let request_id = response.header("x-request-id").unwrap().to_string();
    server.sigterm();
    assert!(server.wait_exit().success());

    let lines = server.log_lines();
    assert!(!lines.is_empty());
    let entries: Vec<Value> = lines
        .iter()
        .map(|line| {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(
                matches!(
                    entry["severity"].as_str(),
                    Some("DEBUG" | "INFO" | "WARNING" | "ERROR")
                ),
                "{line}"
            );
            assert!(entry["message"].is_string(), "{line}");
            entry
        })
        .collect();
    let access = entries
        .iter()
        .find(|e| e["message"] == "request completed" && e["route"] == "/execute")
        .expect("an access log line for the request");
    assert_eq!(
        access["logging.googleapis.com/trace"],
        format!("projects/test-project/traces/{}", hex::encode(&trace_id))
    );
    let span_id = access["logging.googleapis.com/spanId"].as_str().unwrap();
    assert!(span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(access["logging.googleapis.com/trace_sampled"], true);
    assert_eq!(access["request_id"], request_id.as_str());
    assert_eq!(access["tenant"], "default");
    assert_eq!(access["logging.googleapis.com/labels"]["tenant"], "default");
    assert_eq!(access["status"], 200);
    // Cloud Logging's HttpRequest, with its field names and formats.
    let http = &access["httpRequest"];
    assert_eq!(http["requestMethod"], "POST");
    assert_eq!(http["requestUrl"], "/execute");
    assert_eq!(http["status"], 200);
    assert_eq!(http["remoteIp"], "127.0.0.1");
    assert_eq!(http["protocol"], "HTTP/1.1");
    assert!(http["userAgent"].is_string(), "{http}");
    for size in ["requestSize", "responseSize"] {
        assert!(
            http[size]
                .as_str()
                .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)),
            "{size}: {http}"
        );
    }
    let latency = http["latency"].as_str().unwrap();
    assert!(
        latency.ends_with('s') && latency.trim_end_matches('s').parse::<f64>().is_ok(),
        "{latency}"
    );
    // Values are JSON of their own type, never a Rust Debug string.
    for entry in &entries {
        let line = entry.to_string();
        assert!(!line.contains("Some(") && !line.contains("[\\\""), "{line}");
    }
    let everything = lines.join("\n");
    for secret in [SCRIPT_MARKER, ARG_MARKER, OUTPUT_MARKER, API_KEY] {
        assert!(!everything.contains(secret), "`{secret}` was logged");
    }
}

/// The value of one sample in Prometheus text, 0 when absent.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_tenant_and_status_and_runs_by_outcome() {
    let server = SpawnedServer::start(&[]);
    let ok = r#"pyexec_http_requests_total{route="/execute",status="200",tenant="default"}"#;
    let unauthorized = r#"pyexec_http_requests_total{route="/execute",status="401",tenant="-"}"#;
    let bypass = r#"pyexec_cache_requests_total{result="bypass",tenant="default"}"#;
    let before = server.api.scrape().await;
    assert!(before.contains("pyexec_sandbox_ready 1"));

    server
        .api
        .run("def main():\n    return 1")
        .await
        .assert_ok();
    server
        .api
        .execute_with_key(json!({"script": "def main(): pass"}), "wrong-key")
        .await
        .assert_problem(401, "unauthorized");
    server
        .api
        .run("def main():\n    raise ValueError('x')")
        .await
        .assert_problem(422, "runtime-error");

    let after = server.api.scrape().await;
    assert_eq!(
        crate::common::sample(&after, ok),
        crate::common::sample(&before, ok) + 1.0
    );
    assert_eq!(
        crate::common::sample(&after, unauthorized),
        crate::common::sample(&before, unauthorized) + 1.0
    );
    assert_eq!(
        crate::common::sample(&after, bypass),
        crate::common::sample(&before, bypass) + 2.0
    );
    let runs = |text: &str, outcome: &str| -> f64 {
        ["warm", "cold"]
            .iter()
            .map(|mode| {
                crate::common::sample(
                    text,
                    &format!(
                        r#"pyexec_sandbox_run_duration_seconds_count{{mode="{mode}",outcome="{outcome}"}}"#
                    ),
                )
            })
            .sum()
    };
    assert_eq!(runs(&after, "success"), runs(&before, "success") + 1.0);
    assert_eq!(
        runs(&after, "runtime-error"),
        runs(&before, "runtime-error") + 1.0
    );
    assert!(after.contains("pyexec_http_request_duration_seconds_bucket"));
    assert!(after.contains("pyexec_sandbox_queue_depth 0"));
    // Warm runs (a few ms) and cache hits land below the old 5 ms floor.
    assert!(after.contains(r#"le="0.0005""#), "buckets start at 0.5 ms");
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(after.contains(family), "{family} missing");
    }

    // The whole scrape, as the platform's scraper sees it, passes
    // Prometheus's own linter.
    let promtool = std::env::var("PYEXEC_PROMTOOL")
        .unwrap_or_else(|_| "/opt/pyexec/tools/bin/promtool".into());
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{promtool}: {e} (bash scripts/setup.sh --for-tests installs it)")
        });
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_script_finish_flushes_its_spans_and_exits_0() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    // A batch delay longer than the test: the spans can only arrive through
    // the flush at shutdown.
    let mut server = SpawnedServer::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ]);
    let (header, trace_id, _) = traceparent();
    let script = "def main():\n    import time\n    time.sleep(2)\n    return 'finished'\n";
    let request = {
        let client = server.api.client.clone();
        let url = server.api.url("/execute");
        let header = header.clone();
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(API_KEY)
                .header("traceparent", header)
                .json(&json!({ "script": script }))
                .send()
                .await
                .expect("the in-flight request is answered");
            crate::common::Response::read(response).await
        })
    };
    // SIGTERM only once the script is running in its jail.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = server.api.scrape().await;
        let running = runs_in_progress(&text);
        if running >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.sigterm();

    let response = request.await.unwrap();
    assert_eq!(response.assert_ok(), "finished");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, server.log_lines())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(
        status
            .1
            .iter()
            .any(|l| l.contains("shutting down: no new connections"))
    );
    let spans = receiver.wait_for_trace(&trace_id, "sandbox.run").await;
    assert!(names(&spans).contains(&"POST /execute"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_run_longer_than_the_drain_limit() {
    let mut server = SpawnedServer::start(&[]);
    // Longer than the 7.5 s drain limit, shorter than the 30 s run limit: only
    // the drain limit can end the process before the script returns.
    let script = "def main():\n    import time\n    time.sleep(25)\n    return 'finished'\n";
    let request = {
        let client = server.api.client.clone();
        let url = server.api.url("/execute");
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(API_KEY)
                .json(&json!({ "script": script }))
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::common::sample(&server.api.scrape().await, "pyexec_http_requests_in_flight") < 1.0
    {
        // The /execute in flight (scrapes on the operator listener are not counted).
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.sigterm();
    let (status, lines) = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, server.log_lines())
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(lines.iter().any(|l| l.contains("did not finish in time")));
    // Cut off by the server, not by its client: 503, not 499.
    let abandoned = lines
        .iter()
        .find(|l| l.contains("request abandoned"))
        .expect("the cut-off request is logged");
    assert!(
        abandoned.contains("drain deadline") && abandoned.contains("503"),
        "{abandoned}"
    );
    // The abandoned request never got a result.
    if let Ok(response) = request.await.unwrap() {
        assert_ne!(response.status(), 200);
    }
}

#[test]
fn an_otlp_protocol_other_than_grpc_is_refused_with_an_error_line() {
    let server = SpawnedServer::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ]);
    let refused = server.log_lines().into_iter().any(|line| {
        let entry: Value = serde_json::from_str(&line).unwrap();
        entry["severity"] == "ERROR"
            && entry["error"]
                .as_str()
                .is_some_and(|e| e.contains("http/protobuf"))
    });
    assert!(refused, "{:#?}", server.log_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_goes_away_is_counted_and_leaves_no_run_in_progress() {
    let server = SpawnedServer::start(&[]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .post(server.api.url("/execute"))
        .bearer_auth(API_KEY)
        .json(&json!({"script": "def main():\n    import time\n    time.sleep(20)\n"}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    let closed = r#"pyexec_http_requests_total{route="/execute",status="499",tenant="default"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = server.api.scrape().await;
        let running = runs_in_progress(&text);
        if crate::common::sample(&text, closed) == 1.0 && running == 0.0 {
            // Nothing is in flight (the scrape is on the operator listener).
            assert_eq!(
                crate::common::sample(&text, "pyexec_http_requests_in_flight"),
                0.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still counted as running:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs in their jails right now, both sandbox modes together.
fn runs_in_progress(metrics: &str) -> f64 {
    ["warm", "cold"]
        .iter()
        .map(|mode| {
            crate::common::sample(
                metrics,
                &format!(r#"pyexec_sandbox_runs_in_progress{{mode="{mode}"}}"#),
            )
        })
        .sum()
}
