//! The linkpool remote proxy: configuration, administration commands, OS set-up and the
//! daemon.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod admin_http;
pub mod config;
pub mod daemon;
pub mod ledger;
pub mod setup;

/// A directory of its own for a unit test, removed when dropped.
#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::PathBuf;

    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "lp-proxy-unit-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
