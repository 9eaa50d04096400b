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
//! | 5 | `main.rs` (the binary) | the command line: `serve`, `run`, `token`, `keys new`, `policy check` |
//! | 4 | [`config`] | the flags and `PYEXEC_*` variables, checked once, turned into the gateway's [`gateway::ServerConfig`] and the sandbox's [`sandbox::SandboxConfig`] (plain data) |
//! | 3 | [`gateway`] | HTTP: router, handlers, auth, rate limits, quotas, the result cache and their Redis versions, the one error type (problem+json), connections, the operator listener |
//! | 2 | [`tenants`] | tenant policy files: parsed, validated, looked up by key or issuer, hot-reloaded |
//! | 1 | [`sandbox`] | everything that touches nsjail: limits and argv, cgroups, the cold and warm paths, the fair share of slots, what a run's outcome is; usable without the gateway (`pyexec run`) |
//! | 0 | [`telemetry`] | the ground: tracing subscriber, OTLP exporter, log format, metrics registry, the gateway stages' spans; it knows no type of the floors above (the sandbox records its own spans in `sandbox::trace`) |
//!
//! Inside `sandbox/`: `mod.rs` is the [`sandbox::Sandbox`] and its cold path;
//! `outcome` the run's types and how a run is named; `launch` the nsjail
//! command; `process` pipes and fds; `preflight` the checks before the first
//! jail; `privileges` what the binary does with `CAP_SYS_ADMIN` before it
//! drops it; `cgroup`, `limits`, `slots`, `warm`, `jail_files`, `capture`,
//! `background` and `trace` as their first lines say.

pub mod config;
pub mod gateway;
pub mod sandbox;
pub mod telemetry;
pub mod tenants;
