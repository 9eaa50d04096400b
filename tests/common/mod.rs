//! A real gateway on a random port with the real nsjail sandbox, for tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pyexec::gateway::{Application, ServerConfig};
use pyexec::sandbox::{Sandbox, SandboxConfig, SandboxMode};
use pyexec::stores::redis::RedisSettings;
use pyexec::stores::Stores;
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
        warm: Default::default(),
    }
}

/// `PYEXEC_SANDBOX_MODE=cold|warm` runs the whole suite in one mode; CI runs
/// it once per mode.
pub fn forced_mode_from_env() -> Option<SandboxMode> {
    match std::env::var("PYEXEC_SANDBOX_MODE").ok()?.as_str() {
        "" => None,
        "cold" => Some(SandboxMode::Cold),
        "warm" => Some(SandboxMode::Warm),
        other => panic!("PYEXEC_SANDBOX_MODE must be cold or warm, not {other}"),
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        operator_listen: "127.0.0.1:0".parse().unwrap(),
        connections: Default::default(),
        max_body_bytes: 1024 * 1024,
        read_timeout: Duration::from_secs(10),
        sandbox: sandbox_config(),
        bootstrap_api_key: Some(API_KEY.to_string()),
        policies_dir: None,
        cache_bytes: 16 * 1024 * 1024,
        redis: None,
    }
}

/// A server that also serves the tenants of a policies folder.
pub fn policy_server_config(dir: &Path) -> ServerConfig {
    ServerConfig {
        policies_dir: Some(dir.to_path_buf()),
        ..server_config()
    }
}

/// A policy server whose rate limits, quotas and cache live in `redis`.
pub fn redis_server_config(dir: &Path, redis: &RedisServer) -> ServerConfig {
    ServerConfig {
        redis: Some(redis.settings()),
        ..policy_server_config(dir)
    }
}

/// A private `redis-server` on a free port, in a temporary folder, without
/// persistence; killed when dropped. Tests stop, pause and restart it.
pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    /// With TLS: the CA that signed the server's certificate.
    ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password), false)
    }

    /// TLS only (no plain port), with a CA and a server certificate for
    /// 127.0.0.1 made now with the openssl CLI, as Memorystore runs it.
    pub fn start_tls(password: &str) -> Self {
        Self::start_with(Some(password), true)
    }

    fn start_with(password: Option<&str>, tls: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = tls.then(|| make_tls_files(dir.path()));
        let mut server = Self {
            port,
            password: password.map(str::to_string),
            ca_file,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// `redis[s]://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// What a gateway needs to use this server.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.url(),
            // Roomier than the 200 ms default: a busy CI machine must not
            // look like an outage. Outages in the tests are real (killed or
            // frozen server), so this only delays their detection.
            timeout: Duration::from_secs(1),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Starts it (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut command = std::process::Command::new(
            std::env::var("PYEXEC_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        );
        let port = self.port.to_string();
        match &self.ca_file {
            None => command.args(["--port", &port]),
            Some(ca) => {
                let file = |name: &str| self.dir.path().join(name);
                command
                    .args([
                        "--port",
                        "0",
                        "--tls-port",
                        &port,
                        "--tls-auth-clients",
                        "no",
                    ])
                    .arg("--tls-cert-file")
                    .arg(file("server.crt"))
                    .arg("--tls-key-file")
                    .arg(file("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
            }
        };
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null());
        if let Some(p) = &self.password {
            command.args(["--requirepass", p]);
        }
        self.child = Some(
            command
                .spawn()
                .expect("redis-server runs (scripts/setup.sh --with-redis installs it)"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it: connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, calls hang, as with a
    /// Redis that is overloaded or behind a broken network path.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        // SAFETY: kill(2) on the child this helper started and still owns.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    }

    fn try_connection(&self) -> Option<redis::Connection> {
        let client = match &self.ca_file {
            None => redis::Client::open(self.url()),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            ),
        }
        .ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    /// A direct connection, for checking what the gateways wrote.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().expect("redis-server answers")
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`;
/// returns the CA's path.
fn make_tls_files(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=pyexec test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    dir.join("ca.crt")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
    }
}

/// A temporary policies folder.
pub struct PolicyDir {
    dir: tempfile::TempDir,
}

impl PolicyDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<name>.yaml` by rename, as a ConfigMap update does, so the
    /// watcher never reads half a file.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.path().join(format!("{name}.yaml"))).unwrap();
    }

    /// Writes any other file (keys, secrets) and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path().join(format!("{name}.yaml"))).unwrap();
    }
}

/// A tenant policy with one API key and `spec_extra` (YAML lines indented
/// by two spaces, e.g. `"  cache: {enabled: true}\n"`).
pub fn tenant_yaml(name: &str, api_key: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  auth:\n    apiKeys:\n      - sha256: {}\n{spec_extra}",
        hex::encode(pyexec::tenants::hash_api_key(api_key))
    )
}

pub struct TestServer {
    pub base: String,
    /// The operator listener: `/metrics` and `/debug/state`.
    pub ops_base: String,
    pub client: reqwest::Client,
    /// The server's own sandbox, for checks on what runs leave behind; none
    /// for a server in another process.
    pub sandbox: Option<Arc<Sandbox>>,
}

impl TestServer {
    /// Starts a server on its own thread and runtime (so it outlives any one
    /// test's runtime) and waits until its sandbox self-test has passed.
    pub fn start(config: ServerConfig, wait_ready: bool) -> Self {
        Self::start_with_stores(config, Stores::default(), wait_ready)
    }

    /// As [`TestServer::start`], with the rate-limit and quota state in
    /// `stores` (a clock the test moves).
    pub fn start_with_stores(config: ServerConfig, stores: Stores, wait_ready: bool) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = Application::build_with(config, stores)
                    .await
                    .expect("server builds");
                tx.send((app.port(), app.operator_addr(), app.sandbox()))
                    .unwrap();
                app.run_until(std::future::pending()).await.unwrap();
            });
        });
        let (port, operator_addr, sandbox) = rx.recv().expect("server reports its port");
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            ops_base: format!("http://{operator_addr}"),
            // No pooled connections: each test has its own runtime, and a
            // connection left from a finished runtime is dead.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            sandbox: Some(sandbox),
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

    /// A URL on the operator listener.
    pub fn ops_url(&self, path: &str) -> String {
        format!("{}{}", self.ops_base, path)
    }

    /// The operator listener's `/metrics`, checked to be Prometheus text.
    pub async fn scrape(&self) -> String {
        let response = self
            .client
            .get(self.ops_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        response.text().await.unwrap()
    }

    /// The operator listener's `/debug/state`.
    pub async fn debug_state(&self) -> Value {
        let response = self
            .client
            .get(self.ops_url("/debug/state"))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    pub async fn execute(&self, body: Value) -> Response {
        self.execute_with_key(body, API_KEY).await
    }

    pub async fn execute_with_key(&self, body: Value, key: &str) -> Response {
        self.execute_with(body, Some(key), &[]).await
    }

    /// `POST /execute` with an optional bearer token and extra headers.
    pub async fn execute_with(
        &self,
        body: Value,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self.client.post(self.url("/execute")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Response::read(request.send().await.expect("request is answered")).await
    }

    pub async fn health(&self) -> Value {
        let response = self.client.get(self.url("/health")).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// Jails started for requests so far (from `/debug/state`).
    pub async fn runs_started(&self) -> u64 {
        self.debug_state().await["sandbox"]["runs_started"]
            .as_u64()
            .unwrap()
    }

    pub async fn policy_revision(&self) -> String {
        self.debug_state().await["policies"]["revision"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until `/debug/state` reports a reload outcome that `done` accepts
    /// (the watcher reacts asynchronously; the deadline only bounds a hang).
    pub async fn wait_for_policies(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let policies = self.debug_state().await["policies"].clone();
            if done(&policies) {
                return policies;
            }
            assert!(
                Instant::now() < deadline,
                "policies never reached the expected state: {policies}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts raw bytes to `/execute` as JSON with the suite's key: for bodies
    /// that are not (valid) JSON.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> Response {
        let response = self
            .client
            .post(self.url("/execute"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
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

/// One series' value in a Prometheus text scrape (0 when absent).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
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
    stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout_done: std::sync::mpsc::Receiver<()>,
}

/// How to start a [`SpawnedServer`] beyond the defaults.
#[derive(Default)]
pub struct SpawnOptions<'a> {
    pub envs: &'a [(&'a str, &'a str)],
    /// Working directory (so relative defaults such as `--policies policies`
    /// resolve there); the test's own when `None`.
    pub cwd: Option<&'a Path>,
    /// Leave `PYEXEC_API_KEY` unset, so the server generates and prints its
    /// bootstrap key as `scripts/run.sh` shows it.
    pub generate_key: bool,
}

impl SpawnedServer {
    /// Starts it with `envs` on top of a clean telemetry environment and
    /// waits until its sandbox self-test has passed.
    pub fn start(envs: &[(&str, &str)]) -> Self {
        Self::start_with(SpawnOptions {
            envs,
            ..SpawnOptions::default()
        })
    }

    pub fn start_with(options: SpawnOptions) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let config = sandbox_config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
        command
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--nsjail")
            .arg(&config.nsjail_bin)
            .arg("--python")
            .arg(&config.python_bin)
            .arg("--nsjail-dir")
            .arg(&config.nsjail_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if options.generate_key {
            command.env_remove("PYEXEC_API_KEY");
        } else {
            command.env("PYEXEC_API_KEY", API_KEY);
        }
        if let Some(dir) = options.cwd {
            command.current_dir(dir);
        }
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name == "GOOGLE_CLOUD_PROJECT" || name == "PYEXEC_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(options.envs.iter().copied());
        let mut child = command.spawn().expect("pyexec serve starts");
        // stderr is kept for the tests that read what the server prints
        // there, and passed on so a failing test still shows it.
        let stderr = child.stderr.take().unwrap();
        let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                kept.lock().unwrap().push(line);
            }
        });
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
                        let addr = |field: &str| entry[field].as_str().unwrap_or("").to_string();
                        let _ = addr_tx.send((addr("addr"), addr("operator_addr")));
                    }
                }
                collected.lock().unwrap().push(line);
            }
            let _ = done_tx.send(());
        });
        let (addr, operator_addr) = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs the address it listens on");
        let api = TestServer {
            sandbox: None,
            base: format!("http://{addr}"),
            ops_base: format!("http://{operator_addr}"),
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
            stderr_lines,
            stdout_done,
        }
    }

    /// Every stderr line so far (the generated key's message goes there).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// Kills it as a crash would: no shutdown code of its own runs.
    pub fn sigkill(&self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGKILL) }, 0);
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
