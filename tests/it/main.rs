//! Integration tests, one binary: the store conformance suite on both backends, and end-to-end
//! gRPC tests against a real server on port 0.

mod app;
mod cache;
mod cli;
mod cli_client;
mod db;
mod deploy;
mod fixtures;
mod gate;
mod grpc;
mod health;
mod observability;
mod store;
