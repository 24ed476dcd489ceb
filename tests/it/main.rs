//! Integration tests, one binary: the store conformance suite on both backends, and end-to-end
//! gRPC tests against a real server on port 0.

mod app;
mod cli;
mod cli_client;
mod db;
mod deploy;
mod faults;
mod fixtures;
mod gate;
mod grpc;
mod health;
mod hostile;
mod model;
mod observability;
mod pg_cluster;
mod process;
mod store;
mod transport;
