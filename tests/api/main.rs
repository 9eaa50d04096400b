//! The integration suite, one test binary: every area is a module, and all of
//! them share the helpers in `common` (compiled once) and, where a test can,
//! one server with default limits (`common::server`).
//!
//! Tests run in parallel threads of this one process. What they share is
//! process-wide on purpose: the in-process servers' Prometheus registry (tests
//! that count metrics use a server of their own or series no other test
//! touches) and the environment, which holds the gateway's secret canaries
//! from the start (`.cargo/config.toml` sets them, so no test mutates the
//! environment while others read it). What must be per process — the tracing
//! subscriber, the span exporter, signals, the exit code — is tested on a
//! spawned `pyexec serve` (`common::SpawnedServer`).

// Test helpers poll from plain threads outside any runtime, where a blocking
// sleep is what they mean.
#![allow(clippy::disallowed_methods)]

mod common;

mod attack_corpus;
mod cli;
mod containment;
mod deploy_files;
mod discovery;
mod execute_api;
mod files;
mod hostile_http;
mod multiprocessing;
mod openapi;
mod readme_examples;
mod request_fuzz;
mod shared_redis;
mod telemetry;
mod tenancy;
mod warm;
