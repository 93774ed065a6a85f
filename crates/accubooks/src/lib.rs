//! AccuBooks: a multi-tenant accounting API whose every financial and high-risk write is
//! exactly-once, built on the `idem` framework.

pub mod app;
pub mod archive;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod exposition;
pub mod health;
pub mod jobs;
pub mod money;
pub mod openapi;
pub mod ops;
pub mod serve;
pub mod state;
pub mod validate;
pub mod web;
pub mod workflows;
