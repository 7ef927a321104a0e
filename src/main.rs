use std::process::ExitCode;

use bucket_broker::cli::{Command, crds_yaml, write_crds};

fn main() -> ExitCode {
    let cli = bucket_broker::cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir: None } => crds_yaml().map(|yaml| print!("{yaml}")).map_err(report),
        Command::Crds { out_dir: Some(dir) } => write_crds(&dir).map_err(report),
        Command::Run(args) => {
            runtime().and_then(|rt| rt.block_on(bucket_broker::run::run(*args)).map_err(report))
        }
        #[cfg(feature = "local")]
        Command::Quickstart { examples, keep_running, without_controller, state_dir } => {
            runtime().and_then(|rt| {
                let mut out = std::io::stdout();
                let options = bucket_broker::local::quickstart::Options {
                    examples,
                    state_dir,
                    controller: !without_controller,
                };
                let hold = async move {
                    if keep_running || without_controller {
                        println!("  Everything stays up until Ctrl-C.");
                        let _ = tokio::signal::ctrl_c().await;
                    }
                };
                rt.block_on(bucket_broker::local::quickstart::run(&options, &mut out, hold)).map_err(report)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(report)
}

/// An error and its chain of causes on one line.
fn report(err: impl std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
