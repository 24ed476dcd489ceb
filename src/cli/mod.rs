//! The command line: `spec-provider [serve]`, `migrate`, `health`, and the client subcommands
//! (`put`, `get`, `list`, `delete`, `verify`, `import`, `export`) that talk to a running server.

mod client;
mod fixed_spec;
mod input;
mod output;
mod specs;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Settings;
use crate::server::{Application, shutdown_signal};
use crate::{store, telemetry};

/// spec-provider: tells registry facades which image spec belongs to an id.
#[derive(Debug, Parser)]
#[command(name = "spec-provider", version, about)]
pub struct Cli {
    /// Settings file (TOML); environment variables SPEC_PROVIDER__<SECTION>__<KEY> override it.
    #[arg(
        long,
        short,
        global = true,
        env = "SPEC_PROVIDER_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default when no subcommand is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Ask a server's gRPC health service; exit 0 only if it is SERVING (for container probes).
    Health(HealthArgs),
    /// Store a spec (protobuf JSON mapping) under an id; prints the stored record.
    Put(specs::PutArgs),
    /// Print a stored spec, or with --record the whole record, as JSON.
    Get(specs::GetArgs),
    /// List records: a table, or one JSON record per line.
    List(specs::ListArgs),
    /// Delete a record.
    Delete(specs::DeleteArgs),
    /// Check a stored spec (ID) or a spec file (--file) against its registries; exit 0 when
    /// every image resolves and every remote layer answers with its size, 1 otherwise.
    Verify(verify::VerifyArgs),
    /// Import a registry facade's fixed spec file (JSON object: id -> ImageSpec).
    Import(fixed_spec::ImportArgs),
    /// Write records to stdout as a registry facade fixed spec file (always JSON).
    Export(fixed_spec::ExportArgs),
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// The server to ask.
    #[arg(
        long,
        env = "SPEC_PROVIDER_ADDR",
        default_value = client::DEFAULT_ADDR
    )]
    addr: String,
    /// The service to ask about; empty for the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this long (e.g. 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    security: client::SecurityArgs,
}

impl Cli {
    /// Runs the command; the exit code is 0 on success and 1 on failure (clap exits 2 on usage
    /// errors before this is reached).
    pub fn run(self) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("spec-provider: cannot start the async runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async {
            match self.command.unwrap_or(Command::Serve) {
                Command::Serve => serve(self.config).await,
                Command::Migrate => migrate(self.config).await,
                Command::Health(args) => health(args).await,
                Command::Put(args) => specs::put(args).await,
                Command::Get(args) => specs::get(args).await,
                Command::List(args) => specs::list(args).await,
                Command::Delete(args) => specs::delete(args).await,
                Command::Verify(args) => verify::verify(args).await,
                Command::Import(args) => fixed_spec::import(args).await,
                Command::Export(args) => fixed_spec::export(args).await,
            }
        });
        match result {
            Ok(code) => code,
            // The reader went away (`... | head`): what it wanted, it got.
            Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("spec-provider: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether writing to stdout failed because its reader closed the pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn load_settings(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref(), None)?)
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let telemetry = telemetry::init(&settings)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?settings, "starting");
    let result = async {
        Application::build(settings)
            .await?
            .run(shutdown_signal())
            .await
    }
    .await;
    // Flushing waits for the export task, which runs on this runtime: block a blocking-pool
    // thread for it, not one of the runtime's workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let telemetry = telemetry::init(&settings)?;
    let store = store::open(&settings.database).await?;
    store.migrate().await?;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    println!("migrations applied to {}", settings.database.url);
    Ok(ExitCode::SUCCESS)
}

async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let check = async {
        let channel =
            client::connect_channel(&args.addr, args.timeout, args.timeout, &args.security).await?;
        let response = HealthClient::with_interceptor(channel, args.security.bearer_token()?)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "{} answered {:?}: {}",
                    args.addr,
                    status.code(),
                    status.message()
                )
            })?;
        Ok::<_, anyhow::Error>(response.into_inner().status())
    };
    let status = tokio::time::timeout(args.timeout, check)
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer within {:?}", args.addr, args.timeout))??;
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
