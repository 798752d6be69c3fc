use clap::Parser;

fn main() {
    let cli = haste::cli::Cli::parse();
    let verbose = cli.verbose;
    if let Err(e) = haste::cli::run(cli) {
        match &e {
            haste::Error::UnsupportedOps { nodes, .. } if verbose => {
                eprintln!("haste: error: {e}");
                nodes.iter().for_each(|n| eprintln!("  {n}"));
            }
            // The summary names one node per op type; say how to see the others.
            haste::Error::UnsupportedOps { ops, nodes, .. }
                if nodes.len() > ops.matches(" node '").count() =>
            {
                eprintln!("haste: error: {e} (--verbose lists all {})", nodes.len());
            }
            _ => eprintln!("haste: error: {e}"),
        }
        std::process::exit(e.exit_code());
    }
}
