//! Hostile HTTP clients against a real server: slow headers and bodies, huge
//! headers, absurdly nested JSON. Each must end in a clean answer or a closed
//! connection, and other clients must be served meanwhile. (Oversized and
//! chunked bodies and invalid UTF-8 are in execute_api.rs.)

mod common;

use std::time::Duration;

use common::{server, server_config, TestServer, API_KEY};
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
