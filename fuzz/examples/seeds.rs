//! Writes every target's seed inputs, made from real messages, into
//! `<DIR>/<target>/<name>` (default DIR: `fuzz/seeds`, next to this crate's Cargo.toml).
//!
//! `cargo run --example seeds [DIR]`

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("seeds"));
    let repo = here.parent().expect("fuzz/ has a parent").to_path_buf();
    let mut written = 0;
    for (target, name, bytes) in linkpool_fuzz::seeds::all(&repo) {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let f = d.join(&name);
        std::fs::write(&f, &bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        written += 1;
    }
    for t in linkpool_fuzz::TARGETS {
        std::fs::create_dir_all(dir.join(t)).expect("seed directory");
    }
    println!("{written} seeds in {}", dir.display());
}
