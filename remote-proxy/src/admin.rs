//! The proxy's administration commands: `init` (a fresh configuration and key),
//! `member add` (a new member block appended to the configuration, and its bundle) and
//! `member remove` (that block taken out again).
//!
//! They edit files as text: the operator's comments and layout stay as they were.

use crate::config::{ProxyConfig, resolve_relative};
use linkpool_os::config_file::{ConfigError, read_config_file};
use linkpool_protocol::bundle::{CipherChoice, MemberBundle, check_endpoint, check_member_name};
use linkpool_protocol::keys::{SecretKey, SharedSecret};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why an administration command failed.
#[derive(Debug)]
pub enum AdminError {
    /// The configuration (before or after the change) is not valid.
    Config(ConfigError),
    /// A request that cannot be done (name taken, pool full, file exists...).
    Refused(String),
    /// A file could not be written.
    Io(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Config(e) => e.fmt(f),
            AdminError::Refused(m) | AdminError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        AdminError::Config(e)
    }
}

/// A member just added: the new configuration text and the member's bundle.
#[derive(Debug)]
pub struct NewMember {
    /// The whole configuration file with the `[[member]]` block appended.
    pub config_text: String,
    /// The bundle to hand to the member (holds its private key).
    pub bundle: MemberBundle,
}

/// Adds member `name` to the configuration in `text` (read from `path`): generates its
/// keypair, takes the next free address of each pool, and appends a `[[member]]` block.
/// Nothing is written; see [`add_member_to_file`].
pub fn add_member(
    path: &Path,
    text: &str,
    name: &str,
    cipher: Option<CipherChoice>,
    with_psk: bool,
) -> Result<NewMember, AdminError> {
    let config = ProxyConfig::from_toml_str(path, text)?;
    check_member_name(name).map_err(AdminError::Refused)?;
    if config.members.iter().any(|m| m.name == name) {
        return Err(AdminError::Refused(format!(
            "member `{name}` already exists in {}",
            path.display()
        )));
    }
    let used: Vec<IpAddr> = config
        .members
        .iter()
        .flat_map(|m| m.addresses.iter().copied())
        .collect();
    let mut addresses = Vec::new();
    let pools = std::iter::once(config.tunnel.ipv4_pool).chain(config.tunnel.ipv6_pool);
    for pool in pools {
        let a = pool.next_free(&used).ok_or_else(|| {
            AdminError::Refused(format!("the pool {pool} has no free address left"))
        })?;
        addresses.push(a);
    }
    let no_randomness = |e| AdminError::Io(format!("generating a key: {e}"));
    let private_key = SecretKey::generate().map_err(no_randomness)?;
    let psk = if with_psk {
        Some(SharedSecret::generate().map_err(no_randomness)?)
    } else {
        None
    };

    let mut block = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        block.push('\n');
    }
    block.push_str(&format!(
        "\n[[member]]\nname = \"{name}\"\npublic_key = \"{}\"\naddress = [{}]\n",
        private_key.public_key().to_base64(),
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(c) = cipher {
        block.push_str(&format!("cipher = \"{c}\"\n"));
    }
    if let Some(p) = &psk {
        block.push_str(&format!("psk = \"{}\"\n", p.to_base64()));
    }
    let config_text = format!("{text}{block}");
    // The appended block must leave a valid configuration (e.g. the file does not use an
    // inline `member = [...]` array that a `[[member]]` table would clash with).
    ProxyConfig::from_toml_str(path, &config_text)?;

    let bundle = MemberBundle {
        member: name.to_string(),
        private_key,
        proxy_public_key: config.private_key.public_key(),
        proxy_endpoints: config.endpoints.clone(),
        cipher: cipher.unwrap_or_default(),
        psk,
        addresses,
    };
    Ok(NewMember {
        config_text,
        bundle,
    })
}

/// `member add`: adds the member to the file at `path`, writes the bundle to `out` (mode
/// 0600, never over an existing file) if given, and returns the bundle.
pub fn add_member_to_file(
    path: &Path,
    name: &str,
    cipher: Option<CipherChoice>,
    with_psk: bool,
    out: Option<&Path>,
) -> Result<MemberBundle, AdminError> {
    let text = read_config_file(path)?;
    let new = add_member(path, &text, name, cipher, with_psk)?;
    if let Some(out) = out {
        write_new_file(out, &format!("{}\n", new.bundle.render()), 0o600)?;
    }
    if let Err(e) = replace_file(path, &new.config_text) {
        if let Some(out) = out {
            let _ = std::fs::remove_file(out);
        }
        return Err(e);
    }
    Ok(new.bundle)
}

/// Removes member `name` from the configuration in `text` (read from `path`): its
/// `[[member]]` table goes, with the comments written above it; every other line stays.
/// Nothing is written; see [`remove_member_from_file`].
pub fn remove_member(path: &Path, text: &str, name: &str) -> Result<String, AdminError> {
    let config = ProxyConfig::from_toml_str(path, text)?;
    if !config.members.iter().any(|m| m.name == name) {
        return Err(AdminError::Refused(format!(
            "no member `{name}` in {}",
            path.display()
        )));
    }
    // The text parsed as a configuration just above, so it parses as TOML here.
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| AdminError::Refused(format!("{}: {e}", path.display())))?;
    let Some(members) = doc
        .get_mut("member")
        .and_then(|m| m.as_array_of_tables_mut())
    else {
        return Err(AdminError::Refused(format!(
            "{}: members are not `[[member]]` tables; remove `{name}` by hand",
            path.display()
        )));
    };
    members.retain(|t| t.get("name").and_then(|v| v.as_str()) != Some(name));
    let new_text = doc.to_string();
    ProxyConfig::from_toml_str(path, &new_text)?;
    Ok(new_text)
}

/// `member remove`: removes the member from the file at `path`, in place and atomically.
pub fn remove_member_from_file(path: &Path, name: &str) -> Result<(), AdminError> {
    let text = read_config_file(path)?;
    let new_text = remove_member(path, &text, name)?;
    replace_file(path, &new_text)
}

/// Creates `path` with `contents` and `mode`; refuses if it exists.
fn write_new_file(path: &Path, contents: &str, mode: u32) -> Result<(), AdminError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                AdminError::Refused(format!(
                    "{} already exists; not overwriting it",
                    path.display()
                ))
            } else {
                AdminError::Io(format!("cannot create {}: {e}", path.display()))
            }
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| AdminError::Io(format!("writing {}: {e}", path.display())))
}

/// Replaces `path` atomically (temporary file in the same directory, then rename),
/// keeping its permissions.
fn replace_file(path: &Path, contents: &str) -> Result<(), AdminError> {
    let io =
        |what: &str, e: std::io::Error| AdminError::Io(format!("{what} {}: {e}", path.display()));
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        path.with_file_name(name)
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("cannot update", e)
    })
}

/// The text of a fresh configuration.
pub fn initial_config(endpoints: &[String], key_file: &str) -> String {
    let port = endpoints
        .first()
        .and_then(|e| e.rsplit_once(':'))
        .map(|(_, p)| p)
        .unwrap_or("7117");
    let endpoints = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# linkpool-proxy configuration, written by `linkpool-proxy init`.
# Every key is described in linkpool-proxy.example.toml. Check with:
#   linkpool-proxy check-config -c THIS_FILE

# UDP addresses the proxy listens on (one socket each).
listen = ["0.0.0.0:{port}", "[::]:{port}"]
# What member bundles tell gateways to connect to: host:port, [v6]:port or name:port.
endpoints = [{endpoints}]
# The proxy's private key (base64, mode 0600). Relative paths are relative to this file.
private_key_file = "{key_file}"
log_level = "info"
control_socket = "/var/run/linkpool-proxy.sock"

[tunnel]
device = "lpproxy0"
# The first address of each pool is the proxy's own; members get the next free ones.
ipv4_pool = "10.77.0.0/16"
ipv6_pool = "fd77::/64"
# Masquerade out of this device only; empty = any device but the tunnel.
egress_device = ""
mtu = {mtu}

# Who consumed what and whose line carried what for whom, per member and hour (SQLite).
# Relative to this file; `linkpool-proxy ledger -c THIS_FILE` reads it.
[ledger]
path = "ledger.sqlite"

# How each class of flow is spread over a member's paths: auto, session, packet or
# redundant (linkpool-proxy.example.toml says what each does). A member may have its own,
# `spreading = {{ bulk = "session" }}` in its [[member]] table.
[spreading]
interactive = "auto"
bulk = "auto"
default = "auto"

# Members are added with: linkpool-proxy member add NAME -c THIS_FILE
"#,
        mtu = crate::config::DEFAULT_MTU,
    )
}

/// `init`: writes a fresh configuration at `path` and a new private key at `key_file`
/// (default: `proxy.key` next to it), both mode 0600. Refuses to overwrite either.
/// Returns the path of the key file.
pub fn init(
    path: &Path,
    endpoints: &[String],
    key_file: Option<&Path>,
) -> Result<PathBuf, AdminError> {
    if endpoints.is_empty() {
        return Err(AdminError::Refused(
            "give at least one --endpoint HOST:PORT (what members will connect to)".into(),
        ));
    }
    for e in endpoints {
        check_endpoint(e).map_err(AdminError::Refused)?;
    }
    let key_setting = key_file
        .map(|k| k.to_string_lossy().into_owned())
        .unwrap_or_else(|| "proxy.key".into());
    let key_path = resolve_relative(path, &key_setting);
    for p in [path, key_path.as_path()] {
        if p.exists() {
            return Err(AdminError::Refused(format!(
                "{} already exists; not overwriting it",
                p.display()
            )));
        }
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AdminError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let no_randomness = |e| AdminError::Io(format!("generating a key: {e}"));
    let key = SecretKey::generate().map_err(no_randomness)?;
    write_new_file(&key_path, &format!("{}\n", key.to_base64()), 0o600)?;
    let text = initial_config(endpoints, &key_setting);
    if let Err(e) = write_new_file(path, &text, 0o600) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    ProxyConfig::from_toml_str(path, &text)?;
    Ok(key_path)
}
