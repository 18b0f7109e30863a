//! `krs-exporter`: parse flags, start logging, run the library, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use krs_exporter::cli::{self, Flags, Outcome};
use krs_exporter::logging;

fn main() -> ExitCode {
    let flags = Flags::parse();
    logging::init(flags.log_level, flags.log_format);
    match cli::run(flags) {
        Ok(Outcome::Checked(summary)) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("krs-exporter: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
