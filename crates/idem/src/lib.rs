#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("idem needs a store: enable its `postgres` and/or `sqlite` feature");

#[macro_use]
pub mod db;
mod cache;
pub mod execute;
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
pub mod registry;
pub mod retention;
pub mod store;
pub mod telemetry;

pub use db::{Backend, Db, Id, Ts, Tx};
pub use execute::{
    Created, Emitter, Engine, EngineConfig, Event, ExecCtx, Existing, NoEmitter, Operation,
    OperationError,
};
pub use fingerprint::Fingerprint;
pub use http::{FieldError, Gate, Problem, Writer};
pub use key::{deterministic_id, IdempotencyKey, Scope};
pub use registry::{MutationRouter, OperationDef, OperationType, Registry};
