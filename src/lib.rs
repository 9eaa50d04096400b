//! pyexec: runs untrusted Python scripts' `main()` inside nsjail behind an
//! authenticated, rate-limited HTTP gateway.

pub mod config;
pub mod gateway;
pub mod sandbox;
pub mod telemetry;
pub mod tenants;
