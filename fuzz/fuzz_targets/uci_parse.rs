//! The gateway's UCI parser (`linkpool_gateway::uci::parse`) and the UCI config loader on
//! anything: no panic; errors name a line inside the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use linkpool_gateway::config::GatewayConfig;
use linkpool_gateway::uci::{self, UciValue};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1) + 1;
    let pkg = match uci::parse(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "error on line {} of {lines}",
                e.line
            );
            return;
        }
    };
    for s in &pkg.sections {
        assert!(!s.kind.is_empty());
        for o in &s.options {
            assert!(!o.name.is_empty());
            if let UciValue::List(v) = &o.value {
                assert!(!v.is_empty(), "empty list {}", o.name);
            }
        }
    }
    // The loader reads `bundle_file` from disk; keep the fuzzer off the file system.
    if pkg
        .sections
        .iter()
        .any(|s| s.options.iter().any(|o| o.name == "bundle_file"))
    {
        return;
    }
    let resolve = [
        ("lan".to_string(), "br-lan".to_string()),
        ("wan".to_string(), "eth1".to_string()),
    ];
    let _ = GatewayConfig::from_uci_str(Path::new("/etc/config/linkpool"), text, &resolve);
});
