#![allow(unreachable_pub)]

//! Integration tests: the real server on port 0, on SQLite and (with
//! `DATABASE_URL_TEST`) PostgreSQL. Every behavioural test runs on both backends.

mod conformance;
mod harness;

mod access;
mod cancellation;
mod cli;
mod concurrency;
mod contract;
mod fencing;
mod financial;
mod hardening;
mod input;
mod inventory;
mod limits;
mod migrations;
mod openapi;
mod pgbouncer;
mod processes;
mod prometheus;
mod retention;
mod scaling;
mod seed_sql;
mod startup;
mod telemetry;
mod workflows;
