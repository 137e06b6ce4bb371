//! The command line (a contract, like the HTTP API): `serve`, `migrate`, `token`,
//! `account create`, `backup`, `restore`, `gen users`. Every subcommand reads the same
//! configuration as `serve`, so a token minted with the same `--data-dir`/`--config` is
//! accepted by the server.

use crate::app::Application;
use crate::config::{Backend, Overrides, Settings};
use crate::services::Services;
use crate::telemetry;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use stampede_core::auth::NewAccount;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::ShopId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "stampede", version, about = "High-concurrency coupon platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// TOML configuration file (keys as in README "Configuration").
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded mode (SQLite file, generated JWT secret).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and background jobs (embedded SQLite unless configured otherwise).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print a signed access token (for tests and integrations).
    Token {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Subject: the user, merchant, admin or service id.
        #[arg(long)]
        sub: String,
        /// Required for merchants.
        #[arg(long, value_parser = parse_shop)]
        shop_id: Option<ShopId>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: jiff::SignedDuration,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Write an online backup of the embedded data dir (database snapshot, claim journal,
    /// secret, distribution files) to one tar file, while the server keeps running.
    Backup {
        #[command(flatten)]
        common: Common,
        /// The archive to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Unpack a backup into a new or empty data dir; `serve` on it migrates and replays.
    Restore {
        /// The archive `stampede backup` wrote.
        #[arg(long)]
        from: PathBuf,
        /// The data dir to create (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Generate test data files.
    Gen {
        #[command(subcommand)]
        command: GenCommand,
    },
}

#[derive(Subcommand)]
enum GenCommand {
    /// A distribution file: a `user_id` header, then one user id per row.
    Users {
        #[arg(long)]
        rows: u64,
        #[arg(long, value_enum)]
        format: crate::datagen::Format,
        #[arg(long)]
        out: PathBuf,
        /// The first user id; rows count up from it.
        #[arg(long, default_value_t = 1)]
        first_id: u64,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account that can log in with POST /api/v1/auth/login.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, value_parser = parse_shop)]
        shop_id: Option<ShopId>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected user, merchant, admin or service".to_owned())
}

fn parse_shop(s: &str) -> Result<ShopId, String> {
    ShopId::parse(s).ok_or_else(|| "expected a positive integer".to_owned())
}

fn parse_ttl(s: &str) -> Result<jiff::SignedDuration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("expected a duration like 15m, 1h or 7d: {e}"))?;
    if d.is_positive() {
        Ok(d)
    } else {
        Err("the ttl must be positive".into())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Queued log lines go out before anything this function prints.
    telemetry::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Settings> {
    let loaded = Settings::load(
        common.config.as_deref(),
        &Overrides {
            listen,
            data_dir: common.data_dir.clone(),
        },
    )?;
    telemetry::init(&loaded.settings.log, &loaded.settings.tracing);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.settings)
}

/// CLI commands other than `serve` log only warnings, so stdout stays machine-readable.
fn quiet(mut s: Settings) -> Settings {
    if std::env::var_os("RUST_LOG").is_none() {
        s.log.level = "warn".into();
    }
    s
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common, listen } => serve(load(&common, listen)?).await,
        Command::Migrate { common } => {
            let settings = load_quiet(&common)?;
            // Opening a store applies its pending migrations.
            crate::storage::open(&settings).await?;
            println!(
                "migrations applied ({:?} backend)",
                settings.storage.backend
            );
            Ok(())
        }
        Command::Token {
            common,
            role,
            sub,
            shop_id,
            ttl,
        } => {
            let settings = load_quiet(&common)?;
            if role == Role::Merchant && shop_id.is_none() {
                anyhow::bail!("--shop-id is required for --role merchant");
            }
            if role != Role::Merchant && shop_id.is_some() {
                anyhow::bail!("--shop-id is only for --role merchant");
            }
            if sub.is_empty() || sub.len() > 64 {
                anyhow::bail!("--sub must be 1 to 64 characters");
            }
            let secret = crate::secrets::jwt_secret(&settings)?;
            let tokens = stampede_core::auth::TokenService::new(&secret, Arc::new(SystemClock));
            let principal = Principal {
                subject: sub,
                role,
                shop_id,
                session_id: None,
            };
            let token = tokens.mint(&principal, ttl).context("minting the token")?;
            println!("{token}");
            Ok(())
        }
        Command::Backup { common, out } => {
            let settings = load_quiet(&common)?;
            let summary = crate::backup::backup(&settings, &out).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Restore { from, data_dir } => {
            let summary = crate::backup::restore(&from, &data_dir).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Gen {
            command:
                GenCommand::Users {
                    rows,
                    format,
                    out,
                    first_id,
                },
        } => {
            crate::datagen::users(rows, first_id, format, &out)?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Account {
            command:
                AccountCommand::Create {
                    common,
                    username,
                    password,
                    role,
                    shop_id,
                },
        } => {
            let settings = load_quiet(&common)?;
            let services = Services::build(&settings, Arc::new(SystemClock)).await?;
            let account = services
                .auth
                .create_account(NewAccount {
                    username,
                    password,
                    role,
                    shop_id,
                })
                .await
                .context("creating the account")?;
            println!(
                "{}",
                serde_json::json!({
                    "id": account.id.to_string(),
                    "username": account.username,
                    "role": account.role,
                    "shop_id": account.shop_id,
                })
            );
            Ok(())
        }
    }
}

fn load_quiet(common: &Common) -> anyhow::Result<Settings> {
    let loaded = Settings::load(
        common.config.as_deref(),
        &Overrides {
            listen: None,
            data_dir: common.data_dir.clone(),
        },
    )?;
    let settings = quiet(loaded.settings);
    telemetry::init(&settings.log, &settings.tracing);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(settings)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Registered before the listener exists: a SIGTERM sent as soon as the server answers
    // must reach the handler, not the default action (which kills without draining).
    let stop = stop_signal();
    let app = Application::build(settings.clone()).await?;
    let addr = app.local_addr()?;
    let data_dir = settings.server.data_dir.display().to_string();
    let banner = match settings.storage.backend {
        Backend::Sqlite => format!(
            "Stampede listening on http://{addr} (embedded: SQLite at {})\n\
             Get an admin token:  stampede token --role admin --sub 1 --data-dir {data_dir}\n\
             API docs:            http://{addr}/docs",
            settings.sqlite_path().display()
        ),
        Backend::Mysql => format!(
            "Stampede listening on http://{addr} (distributed: {} MySQL database(s) x {} table(s))\n\
             Get an admin token:  stampede token --role admin --sub 1 --config <same config>\n\
             API docs:            http://{addr}/docs",
            settings.storage.mysql.databases.len(),
            settings.storage.mysql.tables_per_database
        ),
    };
    // A closed stdout (a supervisor that stopped reading) must not take the server down.
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{banner}");
    }
    tracing::info!(%addr, backend = ?settings.storage.backend, "listening");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        signal.cancel();
    });
    app.run_until_stopped(shutdown)
        .await
        .context("server stopped with an error")
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called, not
/// when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        async move {
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
