//! The in-process gateway on random ports, and its answers read whole.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pyexec::gateway::{Application, ServerConfig};
use pyexec::sandbox::Sandbox;
use pyexec::stores::Stores;
use serde_json::{Value, json};

use super::{API_KEY, get_status_blocking, server_config};

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

    pub(super) fn wait_ready(&self) {
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
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
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

    /// `GET path` on the public port, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
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
