//! spec-provider: the SpecProvider a registry facade asks which image spec belongs to an id.
#![warn(missing_docs)]

pub mod config;
pub mod domain;
pub mod proto;
pub mod store;
