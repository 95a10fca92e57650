//! What both operators share at run time: how they write to objects another
//! operator also writes (lazy, retry-on-conflict, server-side apply), the one way they
//! watch and run controllers, error classification, and the backoff that retries use.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cli;
pub mod client;
pub mod controller;
pub mod errors;
pub mod events;
pub mod http;
pub mod leader;
pub mod merge;
pub mod metrics;
pub mod observe;
pub mod patch;
pub mod process;
pub mod telemetry;
pub mod watch;
pub mod write;

pub use backoff::{Backoff, ErrorBackoff};
pub use errors::{ErrorClass, NotFoundIsDone, classify};
pub use write::{Change, ConflictStrategy, Target, WriteError, WriteOutcome, Writer};
