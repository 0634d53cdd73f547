fn main() -> std::process::ExitCode {
    custos_server::cli::main()
}
