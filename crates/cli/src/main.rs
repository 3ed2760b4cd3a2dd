//! The `ledgervault` command line; see the library for how it is built.

fn main() {
    std::process::exit(ledgervault_cli::run_main());
}
