//! A real gateway on a random port with the real nsjail sandbox, for tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyexec::config::ServerConfig;
use pyexec::gateway::Application;
use pyexec::sandbox::{SandboxConfig, SandboxMode};
use serde_json::{json, Value};

pub const API_KEY: &str = "pyx_test_key_for_the_integration_suite";

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn sandbox_config() -> SandboxConfig {
    let from_env = |name: &str, default: &str| {
        PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.to_string()))
    };
    SandboxConfig {
        nsjail_bin: from_env("PYEXEC_NSJAIL", "/opt/pyexec/bin/nsjail"),
        python_bin: from_env("PYEXEC_PYTHON", "/opt/pyexec/python/bin/python3"),
        nsjail_dir: repo_path("nsjail"),
        max_concurrent: 4,
        max_queued: 64,
        queue_timeout: Duration::from_secs(60),
        forced_mode: forced_mode_from_env(),
    }
}

/// `PYEXEC_SANDBOX_MODE=cold|warm` runs the whole suite in one mode; CI runs
/// it once per mode.
pub fn forced_mode_from_env() -> Option<SandboxMode> {
    match std::env::var("PYEXEC_SANDBOX_MODE").ok()?.as_str() {
        "cold" => Some(SandboxMode::Cold),
        "warm" => Some(SandboxMode::Warm),
        other => panic!("PYEXEC_SANDBOX_MODE must be cold or warm, not {other}"),
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: 1024 * 1024,
        sandbox: sandbox_config(),
        bootstrap_api_key: Some(API_KEY.to_string()),
    }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
}

impl TestServer {
    /// Starts a server on its own thread and runtime (so it outlives any one
    /// test's runtime) and waits until its sandbox self-test has passed.
    pub fn start(config: ServerConfig, wait_ready: bool) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = Application::build(config).await.expect("server builds");
                tx.send(app.port()).unwrap();
                app.run_until(std::future::pending()).await.unwrap();
            });
        });
        let port = rx.recv().expect("server reports its port");
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            // No pooled connections: each test has its own runtime, and a
            // connection left from a finished runtime is dead.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        if wait_ready {
            server.wait_ready();
        }
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", self.base);
        loop {
            if get_status_blocking(&url) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn execute(&self, body: Value) -> Response {
        self.execute_with_key(body, API_KEY).await
    }

    pub async fn execute_with_key(&self, body: Value, key: &str) -> Response {
        let response = self
            .client
            .post(self.url("/execute"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request is answered");
        Response::read(response).await
    }

    /// Runs a script and returns the response.
    pub async fn run(&self, script: &str) -> Response {
        self.execute(json!({ "script": script })).await
    }
}

/// A response read whole: status, headers and the JSON body.
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem type suffix, e.g. `missing-main`.
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("")
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        &self.body["result"]
    }

    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(
            (self.status, self.problem()),
            (status, kind),
            "unexpected answer: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert!(self.body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

/// The suite's shared server with default limits.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::start(server_config(), true))
}

/// The real `pyexec serve` binary on a random port, its stdout (the JSON log)
/// collected line by line: for what only a whole process shows — the global
/// tracing subscriber, the span exporter, signals and the exit code.
pub struct SpawnedServer {
    pub api: TestServer,
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout_done: std::sync::mpsc::Receiver<()>,
}

impl SpawnedServer {
    /// Starts it with `envs` on top of a clean telemetry environment and
    /// waits until its sandbox self-test has passed.
    pub fn start(envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let config = sandbox_config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
        command
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .arg("--nsjail")
            .arg(&config.nsjail_bin)
            .arg("--python")
            .arg(&config.python_bin)
            .arg("--nsjail-dir")
            .arg(&config.nsjail_dir)
            .env("PYEXEC_API_KEY", API_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name == "GOOGLE_CLOUD_PROJECT" || name == "PYEXEC_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(envs.iter().copied());
        let mut child = command.spawn().expect("pyexec serve starts");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (done_tx, stdout_done) = std::sync::mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["message"] == "pyexec listening" {
                        let _ = addr_tx.send(entry["addr"].as_str().unwrap_or("").to_string());
                    }
                }
                collected.lock().unwrap().push(line);
            }
            let _ = done_tx.send(());
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs the address it listens on");
        let api = TestServer {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        api.wait_ready();
        Self {
            api,
            child,
            lines,
            stdout_done,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// Waits for the process to end (a deadline only so a hang fails the
    /// test instead of the suite) and for its last log line.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let _ = self.stdout_done.recv_timeout(Duration::from_secs(10));
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stdout line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking GET for readiness polling outside any async runtime.
pub fn get_status_blocking(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let host = url.strip_prefix("http://")?.split('/').next()?;
    let path = &url["http://".len() + host.len()..];
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}
