//! `linkpool`: the gateway daemon and its command line.

use linkpool_gateway::config::{ConfigSource, Loaded};
use linkpool_gateway::{daemon, setup};
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
                                       ask the running daemon how it is doing";

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
                source = Some(ConfigSource::Uci {
                    path: parser.value()?.into(),
                    resolve: Vec::new(),
                })
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
            "check-config" => return Ok(Command::CheckConfig(parse_source(&mut parser)?)),
            "status" => return parse_status(&mut parser),
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

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("linkpool: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(Usage(msg)) => {
            eprintln!("linkpool: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Version => {
            println!("linkpool {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Keygen => match SecretKey::generate() {
            Ok(k) => {
                println!("{}", k.to_base64());
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
                    println!("{}", k.public_key().to_base64());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("stdin is not a private key: {e}")),
            }
        }
        Command::CheckConfig(source) => match source.load() {
            Ok(Loaded::Enabled(c)) => {
                for w in &c.warnings {
                    eprintln!("linkpool: warning: {w}");
                }
                println!(
                    "{}: ok (member {}, {} uplink(s), LAN {})",
                    source.path().display(),
                    c.bundle.member,
                    c.uplinks.len(),
                    c.tunnel.lan_devices.join(", ")
                );
                ExitCode::SUCCESS
            }
            Ok(Loaded::Disabled { reason }) => {
                println!("{}: ok, disabled: {reason}", source.path().display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Status { socket, json } => match linkpool_os::control::print_status(&socket, json)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
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
