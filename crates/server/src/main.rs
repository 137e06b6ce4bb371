//! The `stampede` binary: see `stampede --help`.

/// mimalloc instead of glibc's malloc: under claim load glibc's allocator (`_int_malloc`,
/// `malloc_consolidate`, `_int_free`) was ~15 % of the request threads' CPU; mimalloc's
/// per-thread free lists cost a fraction of that (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stampede_server::cli::main()
}
