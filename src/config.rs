//! Server settings: command-line flags with `PYEXEC_*` (and `PORT`) variables
//! behind them, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::defaults;
use crate::gateway::ServerConfig;
use crate::gateway::connection::ConnectionLimits;
use crate::sandbox::{SandboxConfig, SandboxMode, WarmConfig};
use crate::stores::redis::RedisSettings;

/// Where the jail's parts live; shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// The nsjail binary.
    #[arg(
        long = "nsjail",
        env = "PYEXEC_NSJAIL",
        default_value = "/opt/pyexec/bin/nsjail"
    )]
    pub nsjail_bin: PathBuf,
    /// The Python interpreter run inside the jail (its venv or prefix is bound read-only).
    #[arg(
        long = "python",
        env = "PYEXEC_PYTHON",
        default_value = "/opt/pyexec/python/bin/python3"
    )]
    pub python_bin: PathBuf,
    /// Folder with the base nsjail config, the seccomp policy and the in-jail harness.
    #[arg(long, env = "PYEXEC_NSJAIL_DIR", default_value = "nsjail")]
    pub nsjail_dir: PathBuf,
    /// Sandboxes running at once (default: 2 × CPU count).
    #[arg(long, env = "PYEXEC_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Runs waiting for a sandbox before new ones get 503 (default: 4 × max-concurrent).
    #[arg(long, env = "PYEXEC_MAX_QUEUED")]
    pub max_queued: Option<usize>,
    /// Longest wait in the queue, in milliseconds.
    #[arg(long, env = "PYEXEC_QUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub queue_timeout_ms: u64,
    /// Force one sandbox mode for every tenant (benchmarks, tests).
    #[arg(long, env = "PYEXEC_SANDBOX_MODE")]
    pub sandbox_mode: Option<SandboxMode>,
    /// Modules each warm zygote imports once, comma-separated.
    #[arg(long, env = "PYEXEC_WARM_PRELOAD", default_value = defaults::WARM_PRELOAD_FLAG)]
    pub preload: String,
}

impl SandboxArgs {
    pub fn to_config(&self) -> SandboxConfig {
        let max_concurrent = self
            .max_concurrent
            .unwrap_or_else(SandboxConfig::default_concurrency)
            .max(1);
        SandboxConfig {
            nsjail_bin: self.nsjail_bin.clone(),
            python_bin: self.python_bin.clone(),
            nsjail_dir: self.nsjail_dir.clone(),
            max_concurrent,
            max_queued: self.max_queued.unwrap_or(4 * max_concurrent),
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
            forced_mode: self.sandbox_mode,
            warm: WarmConfig {
                preload: self
                    .preload
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
                ..WarmConfig::default()
            },
        }
    }
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT with an IP or a host name (default
    /// 0.0.0.0:$PORT, PORT defaulting to 8080).
    #[arg(long, env = "PYEXEC_LISTEN", value_parser = listen_address)]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "PORT", default_value_t = 8080, hide = true)]
    pub port: u16,
    /// The operator listener: `/metrics` (Prometheus) and `/debug/state`
    /// (tenants, revisions, zygotes, slots in use). Keep it off the public network.
    #[arg(long, env = "PYEXEC_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = listen_address)]
    pub metrics_listen: SocketAddr,
    /// Open client connections at once; beyond it a few more may ask the
    /// health probes (anything else gets 503), the rest are closed at once.
    /// Default: what the process's file descriptor limit leaves room for,
    /// at most 4096.
    #[arg(long, env = "PYEXEC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long a response may wait for its client to read more of it, in
    /// milliseconds, before the connection is closed.
    #[arg(long, env = "PYEXEC_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// Bytes of large responses (over 16 KiB) held for their clients at
    /// once; a response that finds no room within the write timeout gets 503.
    #[arg(long, env = "PYEXEC_RESPONSE_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub response_buffer_bytes: usize,
    /// Largest request body accepted, in bytes; larger ones get 413 before they are read.
    #[arg(long, env = "PYEXEC_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies larger than --max-body-bytes (those that carry
    /// input files) read and held at once, over all tenants (one tenant at
    /// most half); a body that finds no room gets 503.
    #[arg(long, env = "PYEXEC_LARGE_BODY_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub large_body_buffer_bytes: usize,
    /// How long a client has to send its request headers, and again its body,
    /// in milliseconds; a slower one is cut off (the body with 408).
    #[arg(long, env = "PYEXEC_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub read_timeout_ms: u64,
    /// Folder of tenant policy files (`*.yaml`), watched for changes.
    #[arg(long, env = "PYEXEC_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Result cache size in bytes (0 turns the cache off).
    #[arg(long, env = "PYEXEC_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// Redis shared by every replica for rate limits, quotas and the result
    /// cache: `redis://[user:password@]host:6379` or `rediss://…` (TLS).
    /// Unset: everything stays in this process's memory.
    #[arg(long, env = "PYEXEC_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Deadline of each Redis call, in milliseconds; past it Redis counts as down.
    #[arg(long, env = "PYEXEC_REDIS_TIMEOUT_MS", default_value_t = 200)]
    pub redis_timeout_ms: u64,
    /// PEM CA certificate for a rediss:// server (e.g. Memorystore's server CA).
    #[arg(long, env = "PYEXEC_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// By hand: `redis_url` may carry the Redis password.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("port", &self.port)
            .field("metrics_listen", &self.metrics_listen)
            .field("max_connections", &self.max_connections)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("response_buffer_bytes", &self.response_buffer_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("large_body_buffer_bytes", &self.large_body_buffer_bytes)
            .field("policies", &self.policies)
            .field("cache_bytes", &self.cache_bytes)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

/// A listen address: `IP:PORT`, or `HOST:PORT` with a name that resolves
/// (its first address, as the resolver orders them).
fn listen_address(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let expected = "expected HOST:PORT, e.g. 0.0.0.0:8080, [::]:8080 or localhost:8080";
    match value.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{value}` resolves to no address; {expected}")),
        Err(e) => Err(format!("`{value}` is not an address ({e}); {expected}")),
    }
}

impl ServeArgs {
    /// The gateway's settings from these flags, checked.
    pub fn to_server_config(&self) -> anyhow::Result<ServerConfig> {
        let args = self;
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], args.port)));
        anyhow::ensure!(
            args.max_body_bytes >= 1024,
            "--max-body-bytes must be at least 1024"
        );
        anyhow::ensure!(
            (1..=60_000).contains(&args.redis_timeout_ms),
            "--redis-timeout-ms must be from 1 to 60000"
        );
        anyhow::ensure!(
            args.max_connections != Some(0),
            "--max-connections must be at least 1"
        );
        let sandbox = args.sandbox.to_config();
        let mut connections = ConnectionLimits::for_this_process(sandbox.max_concurrent);
        if let Some(max) = args.max_connections {
            connections.max_connections = max;
        }
        connections.write_timeout = Duration::from_millis(args.write_timeout_ms.max(1));
        connections.response_buffer_bytes = args.response_buffer_bytes;
        let redis = args
            .redis_url
            .as_ref()
            .filter(|url| !url.is_empty())
            .map(|url| RedisSettings {
                url: url.clone(),
                timeout: Duration::from_millis(args.redis_timeout_ms),
                ca_file: args.redis_ca_file.clone(),
            });
        Ok(ServerConfig {
            listen,
            operator_listen: args.metrics_listen,
            connections,
            max_body_bytes: args.max_body_bytes,
            large_body_buffer_bytes: args.large_body_buffer_bytes,
            read_timeout: Duration::from_millis(args.read_timeout_ms.max(1)),
            sandbox,
            bootstrap_api_key: std::env::var("PYEXEC_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            policies_dir: Some(args.policies.clone()),
            cache_bytes: args.cache_bytes,
            redis,
        })
    }
}
