/// mimalloc instead of glibc's allocator: requests allocate and free small
/// buffers across threads, where glibc's arenas cost a measurable share of
/// ingest (see docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    callisto::cli::main()
}
