//! The `streampay` binary; everything lives in the library so tests can drive it.

fn main() -> std::process::ExitCode {
    streampay_relayer::cli::main()
}
