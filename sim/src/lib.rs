//! linkpool-sim: the link model the testbed's emulator and the in-process simulator share.
//!
//! [`link::LinkModel`] decides, for one direction of a link, what happens to every frame
//! offered to it (loss, a serialising bottleneck with a tail-drop queue, delay ± jitter
//! without reordering, outages), with time passed in: no clock, no threads.

#![warn(missing_docs)]

pub mod link;
