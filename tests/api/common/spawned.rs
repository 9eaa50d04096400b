//! The real `pyexec serve` binary as a child process.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{API_KEY, TestServer, sandbox_config};

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
    /// `--policies`: the tenants it serves besides the built-in one.
    pub policies: Option<&'a Path>,
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
        if let Some(dir) = options.policies {
            command.arg("--policies").arg(dir);
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
                .user_agent("pyexec-integration-tests")
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
