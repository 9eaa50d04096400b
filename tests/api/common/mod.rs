//! Helpers of the integration suite, one file per concern: the configuration
//! of a test gateway (here), the in-process server and its responses
//! (`server`), the spawned binary (`spawned`), policy folders (`policy`) and a
//! private Redis (`redis`).

mod policy;
mod redis_server;
mod server;
mod spawned;

pub use policy::{PolicyDir, tenant_yaml};
pub use redis_server::RedisServer;
pub use server::{Response, TestServer, sample, server};
pub use spawned::{SpawnOptions, SpawnedServer, get_status_blocking};

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyexec::gateway::ServerConfig;
use pyexec::sandbox::{SandboxConfig, SandboxMode};

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
        large_body_buffer_bytes: 256 << 20,
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
