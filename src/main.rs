use clap::Parser;

fn main() {
    let cli = haste::cli::Cli::parse();
    if let Err(e) = haste::cli::run(cli) {
        eprintln!("haste: error: {e}");
        std::process::exit(e.exit_code());
    }
}
