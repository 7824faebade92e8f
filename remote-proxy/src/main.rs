//! `linkpool-proxy`: the remote proxy daemon and its command line.

use linkpool_protocol::bundle::CipherChoice;
use linkpool_protocol::keys::SecretKey;
use linkpool_proxy::config::ProxyConfig;
use linkpool_proxy::{admin, daemon, ledger, setup};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, info, warn};

const USAGE: &str = "\
usage: linkpool-proxy --version
       linkpool-proxy keygen               print a new private key
       linkpool-proxy init -c FILE --endpoint HOST:PORT [--endpoint ...] [--key-file PATH]
                                           write a new configuration and private key
       linkpool-proxy member add NAME -c FILE [--out FILE] [--cipher chacha20-poly1305] [--psk]
                                           add a member; print (or write) its bundle
       linkpool-proxy member remove NAME -c FILE
                                           remove a member (its bundle stops working on reload)
       linkpool-proxy member list -c FILE  list the members
       linkpool-proxy run -c FILE          run the daemon
       linkpool-proxy check-config -c FILE validate the configuration and exit 0 or 1
       linkpool-proxy status -c FILE [--json]
                                           ask the running daemon about its members
       linkpool-proxy ledger -c FILE [--member NAME] [--since T] [--until T] [--json|--csv]
                                           who consumed what and whose line carried it, per
                                           hour (T: 2026-12-07, 2026-12-07T18:00 UTC, or
                                                                                      unix seconds; --until is exclusive)
       linkpool-proxy credits -c FILE [--member NAME] [--json]
                                           members' credit balances and the admin's adjustments
       linkpool-proxy credits grant|take NAME AMOUNT --reason TEXT -c FILE
                                           add credits to (or take them from) a member's
                                           balance; the reason stays in the ledger";

/// Prints a line on stdout; when stdout is gone (a closed pipe), says so on stderr if it
/// can and returns exit status 1 from the enclosing function. Never panics.
macro_rules! out {
    ($($arg:tt)*) => {
        if let Err(e) = linkpool_os::cli::stdout_line(format_args!($($arg)*)) {
            return linkpool_os::cli::output_failed("linkpool-proxy", &e);
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
    Init {
        config: PathBuf,
        endpoints: Vec<String>,
        key_file: Option<PathBuf>,
    },
    MemberAdd {
        config: PathBuf,
        name: String,
        out: Option<PathBuf>,
        cipher: Option<CipherChoice>,
        psk: bool,
    },
    MemberRemove {
        config: PathBuf,
        name: String,
    },
    MemberList {
        config: PathBuf,
    },
    Run {
        config: PathBuf,
    },
    CheckConfig {
        config: PathBuf,
    },
    Status {
        config: PathBuf,
        json: bool,
    },
    Ledger {
        config: PathBuf,
        filter: ledger::Filter,
        report: ledger::Report,
    },
    Credits {
        config: PathBuf,
        filter: ledger::Filter,
        json: bool,
    },
    Adjust {
        config: PathBuf,
        name: String,
        amount: i64,
        reason: String,
    },
}

fn parse_args() -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let command = match p.next()? {
        Some(Long("version")) | Some(Short('V')) => return no_more(&mut p, Command::Version),
        Some(Long("help")) | Some(Short('h')) => return no_more(&mut p, Command::Help),
        Some(Value(v)) => v.string()?,
        Some(arg) => return Err(arg.unexpected().into()),
        None => return Err(Usage("missing command".into())),
    };
    let command = if command == "credits" {
        // `credits` alone lists; `credits grant|take` adjusts.
        let mut peek = p.clone();
        match peek.next()? {
            Some(Value(v)) if v == "grant" || v == "take" => {
                p = peek;
                format!("credits {}", v.string()?)
            }
            _ => command,
        }
    } else if command == "member" {
        match p.next()? {
            Some(Value(v)) => format!("member {}", v.string()?),
            _ => {
                return Err(Usage(
                    "`member` needs a subcommand: add, remove or list".into(),
                ));
            }
        }
    } else {
        command
    };
    let mut config = None;
    let mut endpoints = Vec::new();
    let mut key_file = None;
    let mut out = None;
    let mut cipher = None;
    let mut psk = false;
    let mut name = None;
    let mut json = false;
    let mut csv = false;
    let mut amount = None;
    let mut reason = None;
    let mut filter = ledger::Filter::all();
    let time = |v: std::ffi::OsString, flag: &str| -> Result<i64, Usage> {
        ledger::parse_time(&v.string()?).map_err(|e| Usage(format!("{flag}: {e}")))
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("config") => config = Some(PathBuf::from(p.value()?)),
            Long("endpoint") if command == "init" => endpoints.push(p.value()?.string()?),
            Long("key-file") if command == "init" => key_file = Some(PathBuf::from(p.value()?)),
            Long("out") if command == "member add" => out = Some(PathBuf::from(p.value()?)),
            Long("cipher") if command == "member add" => {
                let v = p.value()?.string()?;
                cipher = Some(v.parse().map_err(|e| Usage(format!("--cipher: {e}")))?);
            }
            Long("psk") if command == "member add" => psk = true,
            Long("json") if command == "status" || command == "ledger" => json = true,
            Long("csv") if command == "ledger" => csv = true,
            Long("json") if command == "credits" => json = true,
            Long("member") if command == "credits" => filter.member = Some(p.value()?.string()?),
            Long("reason") if command.starts_with("credits ") => {
                reason = Some(p.value()?.string()?)
            }
            Value(v) if command.starts_with("credits ") && name.is_none() => {
                name = Some(v.string()?)
            }
            Value(v) if command.starts_with("credits ") && amount.is_none() => {
                let text = v.string()?;
                let milli =
                    ledger::parse_credits(&text).map_err(|e| Usage(format!("AMOUNT: {e}")))?;
                if milli <= 0 {
                    return Err(Usage(format!("AMOUNT: `{text}` must be more than 0")));
                }
                amount = Some(milli);
            }
            Long("member") if command == "ledger" => filter.member = Some(p.value()?.string()?),
            Long("since") if command == "ledger" => filter.since = time(p.value()?, "--since")?,
            Long("until") if command == "ledger" => filter.until = time(p.value()?, "--until")?,
            Value(v)
                if command.starts_with("member ") && command != "member list" && name.is_none() =>
            {
                name = Some(v.string()?)
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let needs_config = || {
        config
            .clone()
            .ok_or_else(|| Usage(format!("{command}: missing -c FILE")))
    };
    Ok(match command.as_str() {
        "keygen" => {
            if config.is_some() {
                return Err(Usage("keygen takes no options".into()));
            }
            Command::Keygen
        }
        "help" => Command::Help,
        "init" => Command::Init {
            config: needs_config()?,
            endpoints,
            key_file,
        },
        "member add" => Command::MemberAdd {
            config: needs_config()?,
            name: name.ok_or_else(|| Usage("member add: missing NAME".into()))?,
            out,
            cipher,
            psk,
        },
        "member remove" => Command::MemberRemove {
            config: needs_config()?,
            name: name.ok_or_else(|| Usage("member remove: missing NAME".into()))?,
        },
        "member list" => Command::MemberList {
            config: needs_config()?,
        },
        "run" => Command::Run {
            config: needs_config()?,
        },
        "check-config" => Command::CheckConfig {
            config: needs_config()?,
        },
        "status" => Command::Status {
            config: needs_config()?,
            json,
        },
        "credits" => Command::Credits {
            config: needs_config()?,
            filter,
            json,
        },
        "credits grant" | "credits take" => Command::Adjust {
            config: needs_config()?,
            name: name.ok_or_else(|| Usage(format!("{command}: missing NAME")))?,
            amount: amount.ok_or_else(|| Usage(format!("{command}: missing AMOUNT")))?
                * if command == "credits take" { -1 } else { 1 },
            reason: reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                Usage(format!(
                    "{command}: missing --reason TEXT (it stays in the ledger)"
                ))
            })?,
        },
        "ledger" => Command::Ledger {
            config: needs_config()?,
            report: match (json, csv) {
                (true, true) => return Err(Usage("ledger: --json or --csv, not both".into())),
                (true, false) => ledger::Report::Json,
                (false, true) => ledger::Report::Csv,
                (false, false) => ledger::Report::Text,
            },
            filter,
        },
        other => return Err(Usage(format!("unknown command `{other}`"))),
    })
}

fn no_more(p: &mut lexopt::Parser, cmd: Command) -> Result<Command, Usage> {
    match p.next()? {
        Some(arg) => Err(arg.unexpected().into()),
        None => Ok(cmd),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    tell!("linkpool-proxy: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(Usage(msg)) => {
            tell!("linkpool-proxy: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Version => {
            out!("linkpool-proxy {}", env!("CARGO_PKG_VERSION"));
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
        Command::Init {
            config,
            endpoints,
            key_file,
        } => match admin::init(&config, &endpoints, key_file.as_deref()) {
            Ok(key) => {
                tell!(
                    "linkpool-proxy: wrote {} and {}; add members with `linkpool-proxy member add NAME -c {}`",
                    config.display(),
                    key.display(),
                    config.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::MemberAdd {
            config,
            name,
            out,
            cipher,
            psk,
        } => match admin::add_member_to_file(&config, &name, cipher, psk, out.as_deref()) {
            Ok(bundle) => {
                let addrs: Vec<String> = bundle.addresses.iter().map(|a| a.to_string()).collect();
                match out {
                    Some(out) => tell!(
                        "linkpool-proxy: member {name} added ({}); bundle written to {} (it holds the member's private key)",
                        addrs.join(", "),
                        out.display()
                    ),
                    None => {
                        tell!(
                            "linkpool-proxy: member {name} added ({}); its bundle (holds the member's private key):",
                            addrs.join(", ")
                        );
                        let shown =
                            linkpool_os::cli::stdout_line(format_args!("{}", bundle.render()));
                        if let Err(e) = shown {
                            // The member is in the file, but nobody has its private key.
                            return fail(format!(
                                "member {name} was added to {}, but its bundle could not be written ({e}); run `linkpool-proxy member remove {name} -c {}` and add it again, with --out FILE",
                                config.display(),
                                config.display()
                            ));
                        }
                    }
                }
                tell!("linkpool-proxy: a running proxy picks the member up on reload (SIGHUP)");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::MemberRemove { config, name } => {
            match admin::remove_member_from_file(&config, &name) {
                Ok(()) => {
                    tell!(
                        "linkpool-proxy: member {name} removed from {}; a running proxy ends its session on reload (SIGHUP)",
                        config.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::MemberList { config } => match ProxyConfig::load(&config) {
            Ok(c) => {
                out!(
                    "{:<20} {:<30} {:<18} public key",
                    "name",
                    "addresses",
                    "cipher"
                );
                for m in &c.members {
                    let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
                    out!(
                        "{:<20} {:<30} {:<18} {}",
                        m.name,
                        addrs.join(","),
                        m.cipher
                            .map_or("(member's choice)".into(), |c| c.to_string()),
                        m.public_key
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Status { config, json } => {
            let socket = match ProxyConfig::load(&config) {
                Ok(c) => c.control_socket,
                Err(e) => return fail(e),
            };
            match linkpool_os::control::print_status(&socket, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::CheckConfig { config } => match ProxyConfig::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    tell!("linkpool-proxy: warning: {w}");
                }
                out!(
                    "{}: ok ({} member(s), listening on {})",
                    config.display(),
                    c.members.len(),
                    c.listen
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Ledger {
            config,
            filter,
            report,
        } => {
            let file = match ProxyConfig::load(&config) {
                Ok(c) => c.ledger_file,
                Err(e) => return fail(e),
            };
            match ledger::Ledger::open_read_only(&file)
                .and_then(|l| ledger::report(&l, &filter, report))
            {
                Ok(text) => {
                    out!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Credits {
            config,
            filter,
            json,
        } => {
            let file = match ProxyConfig::load(&config) {
                Ok(c) => c.ledger_file,
                Err(e) => return fail(e),
            };
            match ledger::Ledger::open_read_only(&file)
                .and_then(|l| ledger::credits_report(&l, &filter, json))
            {
                Ok(text) => {
                    out!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Adjust {
            config,
            name,
            amount,
            reason,
        } => {
            let c = match ProxyConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if !c.members.iter().any(|m| m.name == name) {
                return fail(format!("no member `{name}` in {}", config.display()));
            }
            let done = ledger::Ledger::open(&c.ledger_file)
                .and_then(|mut l| l.adjust(ledger::unix_now(), &name, amount, &reason));
            match done {
                Ok(()) => {
                    tell!(
                        "linkpool-proxy: {} {} credits {} {name} ({reason})",
                        if amount > 0 { "granted" } else { "took" },
                        ledger::credits(amount.abs()),
                        if amount > 0 { "to" } else { "from" }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Run { config } => run(config),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match ProxyConfig::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let log = linkpool_os::log::init(config.log_level);
    for w in &config.warnings {
        warn!("{w}");
    }
    info!(
        "linkpool-proxy {} starting with {} member(s)",
        env!("CARGO_PKG_VERSION"),
        config.members.len()
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
        daemon::run(config, os, log)
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
