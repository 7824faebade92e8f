//! The core's queue: packets waiting for a path, flow-queued and CoDel-managed (RFC 8290).
