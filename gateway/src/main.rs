fn main() -> std::process::ExitCode {
    callisto::cli::main()
}
