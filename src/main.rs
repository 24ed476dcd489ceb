//! The `spec-provider` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    spec_provider::cli::Cli::parse().run()
}
