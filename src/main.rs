fn main() -> std::process::ExitCode {
    keyway::cli::main()
}
