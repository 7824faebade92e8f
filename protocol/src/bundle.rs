//! Member bundles: what the co-op hands a member to join.
