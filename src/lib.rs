//! pyexec: runs untrusted Python scripts' `main()` inside nsjail behind an
//! authenticated, rate-limited HTTP gateway.
//!
//! # Layout
//!
//! Floors, from the top; a module imports only from the floors below it
//! (`farm-studio look` draws them and finds no circle):
//!
//! | floor | module | its job |
//! | --- | --- | --- |
//! | 6 | `main.rs` (the binary) | the command line: `serve`, `run`, `token`, `keys new`, `policy check` |
//! | 5 | [`config`] | the flags and `PYEXEC_*` variables, checked once, turned into the gateway's [`gateway::ServerConfig`] and the sandbox's [`sandbox::SandboxConfig`] (plain data) |
//! | 4 | [`gateway`] | HTTP: router, handlers, auth, the one error type (problem+json), the `RateLimit` headers, connections, the operator listener |
//! | 3 | [`stores`] | per-tenant state: rate limits, quotas and the result cache, in memory and in Redis, behind traits |
//! | 2 | [`tenants`] | tenant policy files: parsed, validated, looked up by key or issuer, hot-reloaded |
//! | 1 | [`sandbox`] | everything that touches nsjail: limits and argv, cgroups, the cold and warm paths, the fair share of slots, what a run's outcome is; usable without the gateway (`pyexec run`) |
//! | 0 | [`defaults`] | the values several floors share, each once: the script size limit, the warm preload list, the shutdown budget |
//! | 0 | [`telemetry`] | the ground: tracing subscriber, OTLP exporter, log format, metrics registry, the gateway stages' spans; it knows no type of the floors above (the sandbox records its own spans in `sandbox::trace`) |
//!
//! Inside `sandbox/`: `mod.rs` is the [`sandbox::Sandbox`] (admission, mode,
//! self-test); `cold` one nsjail per run; `deadline` a run's wall and CPU
//! limits; `outcome` the run's types and how a run is named; `launch` the
//! nsjail command; `process` pipes and fds; `preflight` the checks before the
//! first jail; `privileges` what the binary does with `CAP_SYS_ADMIN` before
//! it drops it; `seccomp` which rule groups each jail runs under; `warm/` the
//! warm path (the pool in `mod.rs`, `zygote`, `run`, the typed control
//! `protocol`, `processes`); `cgroup/` a run's group (`mod.rs`) and the
//! cgroup views this process sees (`mounts`); `limits`, `slots`,
//! `jail_files`, `capture`, `background` and `trace` as their first lines
//! say. Inside `gateway/`: `execute` is the `/execute` handler as a list of
//! steps (authentication is the `auth::Authenticated` extractor); `bodies`
//! the request and response types, which also derive the OpenAPI schemas;
//! `error` the problem kinds; `connection/` the server loop (`mod.rs`), what
//! a connection's requests are doing (`activity`) and the bodies it moves
//! (`body`).

pub mod config;
pub mod defaults;
pub mod gateway;
pub mod sandbox;
pub mod stores;
pub mod telemetry;
pub mod tenants;
