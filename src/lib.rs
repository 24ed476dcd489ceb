//! spec-provider: the SpecProvider a registry facade asks which image spec belongs to an id.
#![warn(missing_docs)]

pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod framing;
pub mod metrics;
pub mod proto;
pub mod registry;
pub mod security;
pub mod server;
pub mod store;
pub mod telemetry;
