//! The store conformance suite, written once and run against every backend.
