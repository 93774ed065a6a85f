#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("idem needs a store: enable its `postgres` and/or `sqlite` feature");

#[macro_use]
pub mod db;
mod builder;
mod cache;
mod execute;
pub mod fingerprint;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod http;
pub mod hygiene;
pub mod key;
pub mod migrate;
mod observe;
#[cfg(feature = "utoipa")]
mod openapi;
mod operation;
pub mod registry;
pub mod retention;
/// The record store's primitives, public only to the crate's own fault-injection tests.
#[cfg(feature = "test-hooks")]
pub mod store;
#[cfg(not(feature = "test-hooks"))]
#[allow(unreachable_pub)]
mod store;
pub mod telemetry;
mod write;

pub use builder::Builder;
pub use db::{Backend, Db, Id, Ts, Tx};
pub use execute::{Idem, Outcome, RequestMeta, WriteError, WriteReply, WriteRequest};
pub use http::{FieldError, Problem, Writer};
pub use key::{deterministic_id, IdempotencyKey, Scope};
pub use observe::Rejected;
pub use operation::{
    Config, Created, Emitter, Event, ExecCtx, Existing, NoEmitter, Operation, OperationError,
};
pub use registry::{MutationRouter, OperationDef, Registry};
pub use write::Write;
