//! `linkpool`: the gateway daemon and its command line.

use linkpool_gateway::config::{ConfigSource, Loaded};
use linkpool_gateway::{daemon, netifd, setup};
use linkpool_protocol::keys::SecretKey;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, info, warn};

const USAGE: &str = "\
usage: linkpool --version
       linkpool keygen                 print a new private key
       linkpool pubkey                 read a private key on stdin, print its public key
       linkpool run -c FILE            run the daemon from a TOML configuration
       linkpool run --uci FILE [--resolve NETWORK=DEVICE ...]
                                       run the daemon from an OpenWrt UCI file
       linkpool check-config (-c FILE | --uci FILE [--resolve NETWORK=DEVICE ...])
                                       validate a configuration and exit 0 or 1
              linkpool status [--json] [-c FILE | --uci FILE | --socket PATH]
                                       ask the running daemon how it is doing
       linkpool ledger [--json] [-c FILE | --uci FILE | --socket PATH]
                                       this member's account as the proxy last signed it";

/// Prints a line on stdout; when stdout is gone (a closed pipe), says so on stderr if it
/// can and returns exit status 1 from the enclosing function. Never panics.
macro_rules! out {
    ($($arg:tt)*) => {
        if let Err(e) = linkpool_os::cli::stdout_line(format_args!($($arg)*)) {
            return linkpool_os::cli::output_failed("linkpool", &e);
        }
    };
}

/// Prints a line on stderr (a closed stderr is ignored).
macro_rules! tell {
    ($($arg:tt)*) => {
        linkpool_os::cli::stderr_line(format_args!($($arg)*))
    };
}

/// A command-line mistake: exit 2 with the usage.
struct Usage(String);

impl From<lexopt::Error> for Usage {
    fn from(e: lexopt::Error) -> Self {
        Usage(e.to_string())
    }
}

enum Command {
    Version,
    Help,
    Keygen,
    Pubkey,
    Run(ConfigSource),
    CheckConfig(ConfigSource),
    Status { socket: PathBuf, json: bool },
    Ledger { socket: PathBuf, json: bool },
}

fn parse_source(parser: &mut lexopt::Parser) -> Result<ConfigSource, Usage> {
    use lexopt::prelude::*;
    let mut toml: Option<PathBuf> = None;
    let mut uci: Option<PathBuf> = None;
    let mut resolve = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("config") => toml = Some(parser.value()?.into()),
            Long("uci") => uci = Some(parser.value()?.into()),
            Long("resolve") => {
                let v = parser.value()?.string()?;
                let (net, dev) = v
                    .split_once('=')
                    .filter(|(n, d)| !n.is_empty() && !d.is_empty())
                    .ok_or_else(|| Usage(format!("--resolve expects NETWORK=DEVICE, got `{v}`")))?;
                resolve.push((net.to_string(), dev.to_string()));
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    match (toml, uci) {
        (Some(path), None) if resolve.is_empty() => Ok(ConfigSource::Toml(path)),
        (Some(_), None) => Err(Usage("--resolve only goes with --uci".into())),
        (None, Some(path)) => Ok(ConfigSource::Uci { path, resolve }),
        (Some(_), Some(_)) => Err(Usage("give either -c FILE or --uci FILE, not both".into())),
        (None, None) => Err(Usage("missing -c FILE or --uci FILE".into())),
    }
}

fn parse_status(parser: &mut lexopt::Parser) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut socket = None;
    let mut json = false;
    let mut source = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("json") => json = true,
            Long("socket") => socket = Some(PathBuf::from(parser.value()?)),
            Short('c') | Long("config") => {
                source = Some(ConfigSource::Toml(parser.value()?.into()))
            }
            Long("uci") => {
                // Only to find the control socket: quietly.
                let uci = ConfigSource::Uci {
                    path: parser.value()?.into(),
                    resolve: Vec::new(),
                };
                source = Some(resolve_like_init(uci, false))
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    // The socket the configuration names, so a non-default one is found too.
    let socket = match (socket, source) {
        (Some(s), _) => s,
        (None, Some(src)) => match src.load() {
            Ok(Loaded::Enabled(c)) => c.control_socket,
            _ => PathBuf::from(linkpool_gateway::config::DEFAULT_CONTROL_SOCKET),
        },
        (None, None) => PathBuf::from(linkpool_gateway::config::DEFAULT_CONTROL_SOCKET),
    };
    Ok(Command::Status { socket, json })
}

fn parse_args() -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let cmd = match parser.next()? {
        Some(Long("version")) | Some(Short('V')) => Command::Version,
        Some(Long("help")) | Some(Short('h')) => Command::Help,
        Some(Value(v)) => match v.string()?.as_str() {
            "keygen" => Command::Keygen,
            "pubkey" => Command::Pubkey,
            "run" => return Ok(Command::Run(parse_source(&mut parser)?)),
            "check-config" => {
                let source = resolve_like_init(parse_source(&mut parser)?, true);
                return Ok(Command::CheckConfig(source));
            }
            "status" => return parse_status(&mut parser),
            "ledger" => {
                let Command::Status { socket, json } = parse_status(&mut parser)? else {
                    unreachable!("parse_status makes a Status");
                };
                return Ok(Command::Ledger { socket, json });
            }
            "help" => Command::Help,
            other => return Err(Usage(format!("unknown command `{other}`"))),
        },
        Some(arg) => return Err(arg.unexpected().into()),
        None => return Err(Usage("missing command".into())),
    };
    if let Some(arg) = parser.next()? {
        return Err(arg.unexpected().into());
    }
    Ok(cmd)
}

/// For a UCI file given without any `--resolve` (a command typed by hand, as in the README),
/// resolves the logical networks it names the way the init script does: through netifd,
/// with OpenWrt's `network_get_device`. Off OpenWrt (no `network.sh`), or for `run` (the
/// init script passes what it resolved), the source is left as it is, and what stays
/// unresolved is reported with the `--resolve` that would fix it. `verbose`: say on stderr
/// what was resolved, or why nothing was.
fn resolve_like_init(source: ConfigSource, verbose: bool) -> ConfigSource {
    let ConfigSource::Uci { path, resolve } = source else {
        return source;
    };
    if !resolve.is_empty() {
        return ConfigSource::Uci { path, resolve };
    }
    let script = std::path::Path::new(netifd::NETWORK_SH);
    let networks = std::fs::read_to_string(&path)
        .map(|text| netifd::uci_networks(&text))
        .unwrap_or_default();
    if networks.is_empty() {
        return ConfigSource::Uci { path, resolve };
    }
    if !script.exists() {
        if !verbose {
            return ConfigSource::Uci { path, resolve };
        }
        tell!(
            "linkpool: note: {} names logical networks ({}), and {} is not here (not OpenWrt?) to resolve them to devices: give --resolve NETWORK=DEVICE for each",
            path.display(),
            networks.join(", "),
            script.display()
        );
        return ConfigSource::Uci { path, resolve };
    }
    match netifd::resolve_with(script, &networks) {
        Ok(resolve) if !verbose => ConfigSource::Uci { path, resolve },
        Ok(resolve) => {
            let shown: Vec<String> = resolve.iter().map(|(n, d)| format!("{n}={d}")).collect();
            tell!(
                "linkpool: networks resolved through netifd as the init script does: {}",
                if shown.is_empty() {
                    "none is up".to_string()
                } else {
                    shown.join(" ")
                }
            );
            ConfigSource::Uci { path, resolve }
        }
        Err(e) => {
            if verbose {
                tell!("linkpool: note: cannot resolve the networks: {e}");
            }
            ConfigSource::Uci {
                path,
                resolve: Vec::new(),
            }
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    tell!("linkpool: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(Usage(msg)) => {
            tell!("linkpool: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Version => {
            out!("linkpool {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Help => {
            out!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Keygen => match SecretKey::generate() {
            Ok(k) => {
                out!("{}", k.to_base64());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Pubkey => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                return fail(format!("reading stdin: {e}"));
            }
            match SecretKey::from_base64(input.trim()) {
                Ok(k) => {
                    out!("{}", k.public_key().to_base64());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("stdin is not a private key: {e}")),
            }
        }
        Command::CheckConfig(source) => match source.load() {
            Ok(Loaded::Enabled(c)) => {
                for w in &c.warnings {
                    tell!("linkpool: warning: {w}");
                }
                out!(
                    "{}: ok (member {}, {} uplink(s), LAN {})",
                    source.path().display(),
                    c.bundle.member,
                    c.uplinks.len(),
                    c.tunnel.lan_devices.join(", ")
                );
                ExitCode::SUCCESS
            }
            Ok(Loaded::Disabled { reason }) => {
                out!("{}: ok, disabled: {reason}", source.path().display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Status { socket, json } => match linkpool_os::control::print_status(&socket, json)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Ledger { socket, json } => {
            let status = linkpool_os::control::query(&socket, linkpool_os::control::Format::Json)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()));
            match status {
                Ok(status) => {
                    out!(
                        "{}",
                        linkpool_gateway::ledger::render(&status, json).trim_end()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Run(source) => run(source),
    }
}

fn run(source: ConfigSource) -> ExitCode {
    let config = match source.load() {
        Ok(Loaded::Enabled(c)) => *c,
        Ok(Loaded::Disabled { reason }) => {
            linkpool_os::log::init(tracing::level_filters::LevelFilter::INFO);
            info!("disabled: {reason}; not starting");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(e),
    };
    let log = linkpool_os::log::init(config.log_level);
    for w in &config.warnings {
        warn!("{w}");
    }
    info!(
        "linkpool {} starting for member {}",
        env!("CARGO_PKG_VERSION"),
        config.bundle.member
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let os = setup::setup(&config).map_err(|e| e.to_string())?;
        daemon::run(config, os, source, log)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
