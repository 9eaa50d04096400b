//! The `pyexec` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pyexec::config::{SandboxArgs, ServeArgs};
use pyexec::defaults;
use pyexec::gateway::{Application, success_body};
use pyexec::sandbox::{Sandbox, privileges};
use pyexec::stores::quota::utc_date;
use pyexec::telemetry::{self, LogFormat, TelemetryOptions};
use pyexec::tenants::policy::{self, LoadContext};
use pyexec::tenants::{Tenant, generate_api_key, hash_api_key};

#[derive(Parser)]
#[command(
    name = "pyexec",
    version,
    about = "Run untrusted Python scripts' main() inside nsjail"
)]
struct Cli {
    /// Log format (default: text on a terminal, JSON otherwise).
    #[arg(long, global = true, env = "PYEXEC_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Google Cloud project, so log lines name their trace in Cloud Trace.
    #[arg(long, global = true, env = "GOOGLE_CLOUD_PROJECT")]
    gcp_project: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP gateway.
    Serve(ServeArgs),
    /// Run one script through the sandbox and print the API's JSON for it.
    Run(RunArgs),
    /// Tenant policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Mint an HS256 JWT for a tenant whose policy has an HMAC secret (local use, tests).
    Token(TokenArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy in a folder; exits 1 on any error.
    Check {
        /// The policies folder.
        dir: PathBuf,
        /// Folder that tenant `nsjailConfig` files are looked up in.
        #[arg(long, env = "PYEXEC_NSJAIL_DIR", default_value = "nsjail")]
        nsjail_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random API key and the line to paste into the tenant's policy.
    New {
        /// The tenant the key is for (named in the printed policy lines).
        #[arg(long)]
        tenant: String,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The tenant whose policy holds the HMAC secret (`spec.auth.jwt`).
    #[arg(long)]
    tenant: String,
    /// Lifetime, e.g. 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The `sub` claim.
    #[arg(long, default_value = "pyexec-cli")]
    subject: String,
    /// The policies folder the tenant is read from.
    #[arg(long, env = "PYEXEC_POLICIES", default_value = "policies")]
    policies: PathBuf,
    /// Folder that tenant `nsjailConfig` files are looked up in (policies
    /// are validated as the server would).
    #[arg(long, env = "PYEXEC_NSJAIL_DIR", default_value = "nsjail")]
    nsjail_dir: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The script: a Python file defining main().
    file: PathBuf,
    /// Keyword arguments for main(), as a JSON object.
    #[arg(long)]
    args: Option<String>,
    /// Wall-clock limit in milliseconds (default: the tenant's, 30000 for the built-in one).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// An input file for the run: a local FILE, written into the run's /tmp
    /// at PATH (default: FILE's name). Repeatable.
    #[arg(long = "file", value_name = "FILE[=PATH]")]
    files: Vec<String>,
    /// Write the files the script leaves in /tmp/out into DIR (created if
    /// needed; files of the same name are replaced).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run with this tenant's limits and sandbox settings, from --policies, to
    /// reproduce locally what it sees.
    #[arg(long, requires = "policies")]
    tenant: Option<String>,
    /// The policies folder that --tenant is read from.
    #[arg(long, env = "PYEXEC_POLICIES")]
    policies: Option<PathBuf>,
    /// Print the server's log lines (INFO and up) on stderr; by default only
    /// warnings and errors, so stdout and stderr hold the answer alone.
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Run(_)) {
        // Before the runtime's threads exist: they must be born without the
        // capability this gives up.
        privileges::prepare_then_drop_admin();
    }
    let logs_to_stderr = !matches!(cli.command, Command::Serve(_));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pyexec: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        // Inside the runtime: the span exporter's batch task runs on it.
        let telemetry = telemetry::init(TelemetryOptions {
            log_format: cli.log_format.unwrap_or_else(LogFormat::detect),
            to_stderr: logs_to_stderr,
            gcp_project: cli.gcp_project.filter(|p| !p.is_empty()),
            // A person running one script wants its answer, not the log.
            quiet: matches!(&cli.command, Command::Run(run) if !run.verbose),
        });
        let code = match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Run(args) => run(args).await,
            Command::Policy(PolicyCommand::Check { dir, nsjail_dir }) => {
                policy_check(&dir, nsjail_dir)
            }
            Command::Keys(KeysCommand::New { tenant }) => keys_new(&tenant),
            Command::Token(args) => token(args),
        };
        telemetry.shutdown().await;
        code
    });
    // Runs still going after the drain deadline are abandoned, not awaited:
    // the platform's kill would come next anyway.
    runtime.shutdown_timeout(defaults::RUNTIME_STOP_TIMEOUT);
    code
}

async fn serve(args: ServeArgs) -> ExitCode {
    let result = async {
        let config = args.to_server_config()?;
        let app = Application::build(config).await?;
        let addr = app.local_addr();
        let operator_addr = app.operator_addr();
        tracing::info!(%addr, %operator_addr, "pyexec listening");
        if let Some(key) = &app.generated_api_key {
            eprintln!(
                "\nNo PYEXEC_API_KEY was set, so this server generated one (shown once):\n\n  {key}\n\nTry it:\n\n  curl -s -X POST http://localhost:{port}/execute \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{{\"script\": \"def main():\\n    return {{\\\"hello\\\": \\\"world\\\"}}\"}}'\n",
                port = addr.port()
            );
        }
        app.run_until(shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, in the log's own format (where the operator looks).
            tracing::error!("pyexec serve failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let usage_error = |message: String| {
        eprintln!("pyexec run: {message}");
        ExitCode::from(2)
    };
    let script = match std::fs::read_to_string(&args.file) {
        Ok(s) => s,
        Err(e) => return usage_error(format!("cannot read {}: {e}", args.file.display())),
    };
    let mut body = serde_json::json!({"script": script});
    if let Some(raw) = &args.args {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(value) => body["args"] = value,
            Err(e) => return usage_error(format!("--args is not JSON: {e}")),
        }
    }
    if let Some(ms) = args.timeout_ms {
        body["timeout_ms"] = ms.into();
    }
    if !args.files.is_empty() {
        match input_files(&args.files) {
            Ok(files) => body["files"] = files,
            Err(message) => return usage_error(message),
        }
    }
    let tenant = match (&args.tenant, &args.policies) {
        (Some(name), Some(dir)) => {
            let ctx = LoadContext {
                nsjail_dir: args.sandbox.nsjail_dir.clone(),
            };
            match policy::load_dir(dir, &ctx) {
                Ok(tenants) => match tenants.into_iter().find(|t| &t.name == name) {
                    Some(tenant) => tenant,
                    None => {
                        return usage_error(format!("no tenant `{name}` in {}", dir.display()));
                    }
                },
                Err(errors) => {
                    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return usage_error(format!("invalid policies:\n  {}", lines.join("\n  ")));
                }
            }
        }
        _ => Tenant::bootstrap(),
    };
    // The same validation as the API, so a script that passes here passes there.
    let request = match pyexec::gateway::ExecuteRequest::from_value(body, &tenant) {
        Ok(r) => r,
        Err(e) => return print_problem(&e.body(), 2),
    };
    let sandbox = Sandbox::new(args.sandbox.to_config());
    if let Some(problem) = sandbox.status().problems.first() {
        return usage_error(format!("the sandbox is unavailable: {problem}"));
    }
    let (policy, job) = request.into_run(&tenant);
    if let Err(reason) = sandbox.run_self_test().await {
        return usage_error(format!("the sandbox self-test failed: {reason}"));
    }
    match sandbox.execute(&job, &policy).await {
        Ok(report) => match success_body(report) {
            Ok(body) => {
                println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
                let written = args
                    .out
                    .as_deref()
                    .map_or(Ok(()), |dir| write_output_files(dir, &body.files));
                if let Err(message) = written {
                    return usage_error(message);
                }
                ExitCode::SUCCESS
            }
            Err(problem) => print_problem(&problem.body(), 1),
        },
        Err(e) => usage_error(format!("the sandbox failed: {e}")),
    }
}

/// `--file FILE[=PATH]` arguments as the request's `files`; the API checks
/// the paths and limits as it would a client's.
fn input_files(specs: &[String]) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let mut files = Vec::with_capacity(specs.len());
    for spec in specs {
        let (local, path) = match spec.split_once('=') {
            Some((local, path)) => (local, path.to_string()),
            None => {
                let name = Path::new(spec)
                    .file_name()
                    .ok_or_else(|| format!("--file {spec}: names no file"))?;
                (spec.as_str(), name.to_string_lossy().into_owned())
            }
        };
        let bytes = std::fs::read(local).map_err(|e| format!("cannot read {local}: {e}"))?;
        let content = base64::engine::general_purpose::STANDARD.encode(bytes);
        files.push(serde_json::json!({"path": path, "content": content}));
    }
    Ok(serde_json::Value::Array(files))
}

/// The returned files under `dir`. Their paths were checked when they left
/// the jail (plain, relative, no `..`), so each stays inside `dir`.
fn write_output_files(dir: &Path, files: &[pyexec::gateway::OutputFileBody]) -> Result<(), String> {
    use base64::Engine;
    for file in files {
        let target = dir.join(&file.path);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&file.content)
            .map_err(|e| format!("output file {}: {e}", file.path))?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&target, bytes)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    Ok(())
}

fn policy_check(dir: &Path, nsjail_dir: PathBuf) -> ExitCode {
    let ctx = LoadContext { nsjail_dir };
    match policy::load_dir(dir, &ctx) {
        Ok(tenants) => {
            for t in &tenants {
                println!("ok  {:<24} {}  ({})", t.name, t.revision, t.source);
            }
            println!("{} tenant policies are valid", tenants.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            ExitCode::from(1)
        }
    }
}

fn keys_new(tenant: &str) -> ExitCode {
    let key = generate_api_key();
    println!(
        "API key for tenant {tenant} (shown once; give it to the client, keep it nowhere else):\n\n  {key}\n"
    );
    println!("Paste under spec.auth.apiKeys in the tenant's policy:\n");
    println!(
        "      - sha256: {}\n        description: \"created {}\"",
        hex::encode(hash_api_key(&key)),
        utc_date(unix_now())
    );
    ExitCode::SUCCESS
}

fn token(args: TokenArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("pyexec token: {message}");
        ExitCode::from(2)
    };
    let ctx = LoadContext {
        nsjail_dir: args.nsjail_dir,
    };
    let tenants = match policy::load_dir(&args.policies, &ctx) {
        Ok(t) => t,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return fail(format!("invalid policies:\n  {}", lines.join("\n  ")));
        }
    };
    let Some(tenant) = tenants.into_iter().find(|t| t.name == args.tenant) else {
        return fail(format!(
            "no tenant `{}` in {}",
            args.tenant,
            args.policies.display()
        ));
    };
    let Some(jwt) = &tenant.jwt else {
        return fail(format!("tenant `{}` has no spec.auth.jwt", tenant.name));
    };
    let (Some(secret), true) = (
        &jwt.hmac_secret,
        jwt.algorithms.contains(&jsonwebtoken::Algorithm::HS256),
    ) else {
        return fail(format!(
            "tenant `{}` does not accept HS256 with an HMAC secret; mint its tokens with its identity provider",
            tenant.name
        ));
    };
    let now = unix_now();
    let mut claims = serde_json::json!({
        "iss": jwt.issuer,
        "sub": args.subject,
        "iat": now,
        "nbf": now,
        "exp": now + args.ttl.as_secs(),
    });
    if let Some(aud) = &jwt.audience {
        claims["aud"] = aud.clone().into();
    }
    match jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot sign: {e}")),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `90`, `90s`, `15m`, `1h` or `7d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(unit_secs) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("`{text}` must be a positive duration")),
    }
}

fn print_problem(body: &pyexec::gateway::Problem, code: u8) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(body).expect("JSON"));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls_parse_as_documented() {
        assert_eq!(
            super::parse_ttl("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            super::parse_ttl("90"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert!(super::parse_ttl("0s").is_err());
        assert!(super::parse_ttl("1y").is_err());
    }
}
