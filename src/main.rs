use clap::Parser;

fn main() {
    return_large_buffers_on_free();
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

/// Keeps glibc's allocator serving buffers of 128 KB or more from their own mappings, which
/// go back to the system when freed. By default glibc raises that threshold to the size of
/// each such buffer freed (up to 32 MB), after which buffers of up to that size come from
/// the heap, where freed memory stays resident: `bench` and `eval` build, free and rebuild
/// HASTE kernels (a filter bank copy each, 9.4 MB for a 512 -> 512 3x3 layer) while choosing
/// tiles, and ResNet-18's peak at batch 16 was 251-263 MB for a plan of 208 MB; with the
/// threshold fixed, 232 MB.
fn return_large_buffers_on_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: `mallopt` is glibc's, called before any thread starts; it only tunes the
        // allocator (a failure leaves the default, so its result is not needed).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}
