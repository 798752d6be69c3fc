//! The `haste` command line: a thin layer over the library.

mod args;
mod eval;
mod output;

pub use args::Cli;

use crate::error::Result;
use args::Command;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(a) => eval::run(a),
    }
}
