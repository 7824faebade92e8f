//! Putting spread packets back in order per flow, over a fixed pool of buffers.
