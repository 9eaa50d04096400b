//! The `pyexec` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pyexec::config::{SandboxArgs, ServeArgs, ServerConfig};
use pyexec::gateway::{success_body, Application};
use pyexec::sandbox::{Job, Sandbox};
use pyexec::telemetry::{self, LogFormat, TelemetryOptions};
use pyexec::tenants::Tenant;

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
}

#[derive(clap::Args)]
struct RunArgs {
    /// The script: a Python file defining main().
    file: PathBuf,
    /// Keyword arguments for main(), as a JSON object.
    #[arg(long)]
    args: Option<String>,
    /// Wall-clock limit in milliseconds (default 30000).
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        });
        let code = match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Run(args) => run(args).await,
        };
        telemetry.shutdown().await;
        code
    });
    // Runs still going after the drain deadline are abandoned, not awaited:
    // the platform's kill would come next anyway.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn serve(args: ServeArgs) -> ExitCode {
    let result = async {
        let config = ServerConfig::from_args(&args)?;
        let app = Application::build(config).await?;
        let addr = app.local_addr();
        tracing::info!(%addr, "pyexec listening");
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
            tracing::error!(error = %e, "pyexec serve failed");
            eprintln!("pyexec: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
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
    let tenant = Tenant::bootstrap();
    // The same validation as the API, so a script that passes here passes there.
    let request = match pyexec::gateway::ExecuteRequest::parse(body.to_string().as_bytes(), &tenant)
    {
        Ok(r) => r,
        Err(e) => return print_problem(&e.body(), 2),
    };
    let sandbox = Sandbox::new(args.sandbox.to_config());
    if let Some(problem) = sandbox.status().problems.first() {
        return usage_error(format!("the sandbox is unavailable: {problem}"));
    }
    let mut policy = tenant.sandbox.clone();
    if let Some(ms) = request.timeout_ms {
        policy.limits.wall_timeout = Duration::from_millis(ms);
    }
    let job = Job {
        script: request.script,
        args: request.args,
    };
    if let Err(reason) = sandbox.run_self_test().await {
        return usage_error(format!("the sandbox self-test failed: {reason}"));
    }
    match sandbox.execute(&job, &policy).await {
        Ok(report) => match success_body(report) {
            Ok(body) => {
                println!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
                ExitCode::SUCCESS
            }
            Err(problem) => print_problem(&problem.body(), 1),
        },
        Err(e) => usage_error(format!("the sandbox failed: {e}")),
    }
}

fn print_problem(body: &serde_json::Value, code: u8) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(body).expect("JSON"));
    ExitCode::from(code)
}
