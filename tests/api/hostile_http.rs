//! Hostile HTTP clients against a real server: slow headers and bodies, huge
//! headers, absurdly nested JSON, connections that never speak or never
//! read, more connections than the server takes, bodies sent whole before
//! the answer is read. Each must end in a clean answer or a closed
//! connection, and other clients must be served meanwhile. (Oversized and
//! chunked bodies and invalid UTF-8 are in execute_api.rs.)

use std::time::Duration;

use crate::common::{
    API_KEY, SpawnOptions, SpawnedServer, TestServer, sample, server, server_config,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose clients get one second for their headers and their body.
fn impatient_server() -> TestServer {
    let mut config = server_config();
    config.read_timeout = Duration::from_secs(1);
    TestServer::start(config, true)
}

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

async fn assert_serves(server: &TestServer) {
    let r = server.run("def main():\n    return 'served'").await;
    assert_eq!(r.assert_ok(), "served");
}

/// Reads until the server closes the connection (or a generous bound passes,
/// which fails the test: the server must cut the client off by itself).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the slow connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_while_others_are_served() {
    let server = impatient_server();
    let mut slow = TcpStream::connect(addr(&server)).await.unwrap();
    let head = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_serves(&server).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut response)).await;
    trickle.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("request-timeout"), "{response}");
    assert_serves(&server).await;
}

#[tokio::test]
async fn clients_trickling_their_headers_are_cut_off_and_block_no_one() {
    let server = impatient_server();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
        stream
            .write_all(b"POST /execute HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let trickle = async {
        // One header byte per connection every 100 ms: never a whole header.
        for _ in 0..20 {
            for stream in slow.iter_mut() {
                let _ = stream.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(trickle, assert_serves(&server));
    for stream in slow.iter_mut() {
        let answer = read_until_closed(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    assert_serves(&server).await;
}

#[tokio::test]
async fn huge_or_countless_headers_get_431_or_400_and_never_a_crash() {
    let s = server();
    let huge_value = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let mut many = String::from("POST /execute HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for request in [huge_value, many] {
        let mut stream = TcpStream::connect(addr(s)).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 431")
                || answer.starts_with("HTTP/1.1 400"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // Header values that are not UTF-8 are just not echoed.
    let mut stream = TcpStream::connect(addr(s)).await.unwrap();
    let request =
        b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: \xff\xfe\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_serves(s).await;
}

#[tokio::test]
async fn a_200000_deep_json_body_is_a_400_not_a_stack_overflow() {
    let s = server();
    let body = format!(
        "{{\"script\": \"def main(): return 1\", \"args\": {{\"a\": {}{}}}}}",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    s.post_raw(body)
        .await
        .assert_problem(400, "invalid-request");
    let r = s
        .execute(json!({"script": "def main():\n    return 'alive'"}))
        .await;
    assert_eq!(r.assert_ok(), "alive");
}

/// What the operator listener counts for one series.
async fn metric(server: &TestServer, series: &str) -> f64 {
    sample(&server.scrape().await, series)
}

/// A raw `POST /execute` of `script` with the suite's key, uncached.
fn execute_request(script: &str) -> Vec<u8> {
    let body = json!({"script": script, "cache": false}).to_string();
    format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn connections_that_never_start_a_request_are_closed() {
    let server = impatient_server();
    let closed = "pyexec_http_connections_closed_total{reason=\"first-request-timeout\"}";
    let before = metric(&server, closed).await;
    let mut silent = TcpStream::connect(addr(&server)).await.unwrap();
    let mut preface_only = TcpStream::connect(addr(&server)).await.unwrap();
    // The HTTP/2 client preface and an empty SETTINGS frame, then nothing.
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut half_header = TcpStream::connect(addr(&server)).await.unwrap();
    half_header
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(addr(&server)).await.unwrap();
    kept_alive
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_serves(&server).await;
    assert_eq!(read_until_closed(&mut silent).await, "");
    let settings = read_until_closed(&mut preface_only).await;
    assert!(
        !settings.contains("HTTP/1.1"),
        "answered as HTTP/2: {settings:?}"
    );
    let answer = read_until_closed(&mut half_header).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    let answer = read_until_closed(&mut kept_alive).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served once, then closed idle: {answer}"
    );
    assert!(
        metric(&server, closed).await >= before + 2.0,
        "the silent and the preface-only connections are counted"
    );
    assert_serves(&server).await;
}

#[tokio::test]
async fn past_the_connection_cap_probes_answer_and_everything_else_is_refused() {
    let mut config = server_config();
    config.connections.max_connections = 4;
    let server = TestServer::start(config, true);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    // Accepted in order: once the fourth has a task, the cap is reached.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let livez = server
        .client
        .get(server.url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(livez.status(), 200, "probes answer past the cap");
    assert_eq!(livez.headers()["connection"], "close");
    let refused = server.run("def main():\n    return 1").await;
    refused.assert_problem(503, "unavailable");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("connection limit"), "{detail}");
    // Past the probe lane too: closed at once, without a word.
    for _ in 0..pyexec::gateway::connection::PROBE_LANE {
        held.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed_at_once = "pyexec_http_connections_refused_total{reason=\"closed\"}";
    let before = metric(&server, closed_at_once).await;
    let mut beyond = TcpStream::connect(addr(&server)).await.unwrap();
    assert_eq!(read_until_closed(&mut beyond).await, "");
    assert!(metric(&server, closed_at_once).await > before);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_serves(&server).await;
}

#[tokio::test]
async fn a_response_its_client_never_reads_is_dropped_after_the_write_timeout() {
    let policies = crate::common::PolicyDir::new();
    policies.write(
        "big",
        &crate::common::tenant_yaml("big", API_KEY, "  sandbox: {maxOutputBytes: 33554432}\n"),
    );
    let mut config = crate::common::policy_server_config(policies.path());
    config.connections.write_timeout = Duration::from_secs(1);
    let server = TestServer::start(config, true);
    let closed = "pyexec_http_connections_closed_total{reason=\"write-timeout\"}";
    let before = metric(&server, closed).await;
    // 24 MiB: more than the kernel's socket buffers on both sides hold.
    let script = "import sys\ndef main():\n    sys.stdout.write('x' * (24 << 20))\n    return 1";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket
        .connect(addr(&server).parse().unwrap())
        .await
        .unwrap();
    reader.write_all(&execute_request(script)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&server, closed).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled response was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = read_until_closed(&mut reader).await;
    assert!(
        received.starts_with("HTTP/1.1 200"),
        "{}",
        &received[..received.len().min(200)]
    );
    assert!(received.len() < 24 << 20, "cut off before the end");
    assert_serves(&server).await;
}

/// Reads the gateway's own resident memory (not its sandboxes').
fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test]
async fn clients_that_never_read_large_responses_cost_a_bounded_amount_of_memory() {
    const BUDGET_MIB: f64 = 4.0;
    // Allocator slack and the answers being built: each run's capture, its
    // text and its JSON, on every slot at once.
    const SLACK_MIB: f64 = 32.0;
    let budget = (BUDGET_MIB as usize * 1024 * 1024).to_string();
    let server = SpawnedServer::start_with(SpawnOptions {
        envs: &[
            ("PYEXEC_RESPONSE_BUFFER_BYTES", &budget),
            ("PYEXEC_WRITE_TIMEOUT_MS", "3000"),
        ],
        ..SpawnOptions::default()
    });
    let api = &server.api;
    assert_serves(api).await;
    let baseline = rss_mib(server.pid());
    // 1 MiB of \x01 would be 6 MiB of JSON; the cap counts the escapes.
    let script = "import sys\ndef main():\n    sys.stdout.write('\\x01' * (1 << 20))\n    return 1";
    let mut clients = Vec::new();
    for _ in 0..16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr(api).parse().unwrap()).await.unwrap();
        client.write_all(&execute_request(script)).await.unwrap();
        clients.push(client);
    }
    let answered = r#"pyexec_http_requests_total{route="/execute",status="200",tenant="default"}"#;
    let busy = r#"pyexec_http_requests_total{route="/execute",status="503",tenant="default"}"#;
    let mut peak = baseline;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        peak = peak.max(rss_mib(server.pid()));
        let text = api.scrape().await;
        if sample(&text, answered) + sample(&text, busy) >= 17.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 16 requests were never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        peak = peak.max(rss_mib(server.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "gateway RSS: {baseline:.1} MiB before, {peak:.1} MiB at most with 16 clients not reading"
    );
    assert!(
        peak - baseline < BUDGET_MIB + SLACK_MIB,
        "16 clients that never read grew the gateway by {:.1} MiB",
        peak - baseline
    );
    for mut client in clients {
        let answer = read_until_closed(&mut client).await;
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 200")
                || answer.starts_with("HTTP/1.1 503"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    assert_serves(api).await;
}

#[tokio::test]
async fn python_clients_that_send_the_whole_body_first_see_the_413() {
    let url = server().url("/execute");
    let program = format!(
        r#"
import sys, urllib.error, urllib.request, requests
body = b"x" * (64 << 20)
headers = {{"Authorization": "Bearer {API_KEY}", "Content-Type": "application/json"}}
try:
    urllib.request.urlopen(urllib.request.Request("{url}", data=body, headers=headers), timeout=60)
    print("urllib 200")
except urllib.error.HTTPError as e:
    print("urllib", e.code)
print("requests", requests.post("{url}", data=body, headers=headers, timeout=60).status_code)
"#
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", &program])
            .output()
            .expect("Debian's python3 runs (scripts/setup.sh installs python3-requests)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["urllib 413", "requests 413"],
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
