//! The thin OS layer both daemons share.
