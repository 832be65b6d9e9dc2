//! The command line (SPEC §2).

mod check;
mod demo;
mod explain;
mod run;
mod test;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "keyway",
    version,
    about = "An identity-aware reverse proxy: every request reaches its upstream with the identity and credentials it should carry, or is refused with a precise reason."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file (reload on SIGHUP, drain on SIGTERM).
    Run {
        #[arg(short, long, default_value = "keyway.yaml")]
        config: PathBuf,
    },
    /// Serve an embedded demo config with a builtin echo upstream and print curl commands.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_listen: std::net::SocketAddr,
    },
    /// Validate a config: errors with line:column, pitfall warnings; --probe tries each upstream.
    Check {
        #[arg(short, long, default_value = "keyway.yaml")]
        config: PathBuf,
        /// Send one request to each upstream with its injected credentials.
        #[arg(long)]
        probe: bool,
        /// A file holding a JWT a client will send: warn for each route that would refuse it
        /// for a missing consumer (or identity) claim. Only claim names are printed.
        #[arg(long, value_name = "FILE")]
        token: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Dry-run one request through routing, header policy, authentication and authorisation,
    /// printing every step and what would be sent upstream (secrets redacted). Exit 0 allowed,
    /// 1 refused, 2 undecided offline or a bad argument.
    Explain {
        #[arg(short, long, default_value = "keyway.yaml")]
        config: PathBuf,
        /// Use the embedded demo config (`keyway demo`) instead of a file.
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// GET, POST, ...
        method: String,
        /// http://host/path?query (https:// for a request over TLS), or a path.
        url: String,
        /// A request header 'Name: value'; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// A cookie 'name=value'; repeatable.
        #[arg(long = "cookie")]
        cookies: Vec<String>,
        /// The client address, checked against trusted_proxies.
        #[arg(long, default_value = "127.0.0.1")]
        peer: std::net::IpAddr,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run policy cases (a request and its expected outcome each) through explain; one
    /// pass/fail line each; exit 1 on any failure.
    Test {
        #[arg(short, long, default_value = "keyway.yaml")]
        config: PathBuf,
        /// The embedded demo config, and its embedded cases unless CASES is given.
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// The cases file (YAML list of {name, request, expect}).
        cases: Option<PathBuf>,
    },
    /// Print the hashed form of an API key for `api_keys` (`-` reads the key from stdin).
    HashKey { key: String },
    /// Mint a JWT for a consumer that has an HS* secret or a private key.
    Token {
        /// The consumer's name.
        #[arg(long)]
        consumer: String,
        #[arg(short, long, default_value = "keyway.yaml")]
        config: PathBuf,
        /// Lifetime: 30s, 5m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Extra claim NAME=VALUE (JSON values such as 3, true, [..] stay JSON); repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
    /// Print the JSON Schema of the config file.
    Schema,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => run::run(config),
        Command::Demo {
            listen,
            admin_listen,
        } => demo::demo(listen, admin_listen),
        Command::Check {
            config,
            probe,
            token,
            json,
        } => check::check(&config, probe, token.as_deref(), json),
        Command::Explain {
            config,
            demo,
            method,
            url,
            headers,
            cookies,
            peer,
            json,
        } => explain::explain(&explain::Args {
            config: &config,
            demo,
            method: &method,
            url: &url,
            headers: &headers,
            cookies: &cookies,
            peer: Some(peer),
            json,
        }),
        Command::Test {
            config,
            demo,
            cases,
        } => test::test(&config, demo, cases.as_ref()),
        Command::HashKey { key } => hash_key(&key),
        Command::Token {
            consumer,
            config,
            ttl,
            claims,
        } => token::token(&config, &consumer, &ttl, &claims),
        Command::Schema => {
            let schema = schemars::schema_for!(crate::config::file::FileConfig);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}

/// Loads the config, or prints every error (`SOURCE:LINE:COLUMN: …`) on stderr and gives the
/// exit code `failure` to return.
fn load_or_report(
    source: &crate::config::Source,
    failure: ExitCode,
) -> Result<crate::pipeline::compile::Loaded, ExitCode> {
    crate::pipeline::compile::load(source).map_err(|errors| {
        for e in &errors {
            eprintln!("{}:{e}", source.describe());
        }
        failure
    })
}

fn hash_key(key: &str) -> ExitCode {
    let key = if key == "-" {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("keyway: cannot read the key from stdin");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        key.to_owned()
    };
    if key.is_empty() {
        eprintln!("keyway: the key is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", crate::pipeline::authn::api_key::hashed_form(&key));
    ExitCode::SUCCESS
}

/// Logs go to stderr through a background writer so request handling never blocks on it.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    // The default queue preallocates 128k lines (4 MB); lines beyond this bound are dropped
    // rather than blocking a request.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(true)
        .finish(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    crate::access_log::set_format(match format {
        LogFormat::Json => crate::access_log::Format::Json,
        LogFormat::Text => crate::access_log::Format::Text,
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    guard
}

/// The tokio runtime for serving, sized by `workers`.
fn tokio_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    // One worker: the current-thread scheduler serves everything on the main thread, without
    // the cross-thread queues and wake-ups a one-worker multi-thread runtime still pays for.
    if workers == Some(1) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build()
}
