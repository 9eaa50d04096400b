//! A private `redis-server` for the tests of shared stores.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyexec::stores::redis::RedisSettings;

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
