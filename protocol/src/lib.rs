//! linkpool protocol core.
