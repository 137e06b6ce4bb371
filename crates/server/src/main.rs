//! The `stampede` binary: see `stampede --help`.

fn main() -> std::process::ExitCode {
    stampede_server::cli::main()
}
