//! The `sluice` binary: `sluice --config FILE` runs; `sluice check --config FILE` validates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_config::Settings;

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// on one worker thread, which mimalloc serves from thread-local free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `sluice --version`: the crate version and the source revision it was built from, a git
/// commit with `-dirty` when built from a modified tree, or `unknown` (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("SLUICE_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "sluice",
    version = VERSION,
    about = "A Kubernetes Ingress controller on Pingora"
)]
struct Cli {
    /// The settings file.
    #[arg(long, short, global = true, default_value = "config/sluice.toml")]
    config: PathBuf,
    /// A kubeconfig file for the kubernetes source (replaces `source.kubernetes.kubeconfig`).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (replaces `source.kubernetes.context`).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the settings file and a folder of manifests without a cluster, and print, per
    /// Ingress, the routes it would serve and every rule it would skip with the reason.
    /// Exit status: 0 all served as written, 1 something skipped or unreadable, 2 bad settings.
    Check {
        /// The folder of manifests (default: the files source's folder, if that is the source).
        #[arg(long)]
        manifests: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match sluice::settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if let sluice_config::settings::SourceSettings::Kubernetes(k) = &mut settings.source {
        if let Some(path) = cli.kubeconfig {
            k.kubeconfig = Some(path);
        }
        if let Some(context) = cli.context {
            k.context = Some(context);
        }
    }
    match cli.command {
        Some(Command::Check { manifests }) => check(&cli.config, &settings, manifests),
        None => run(settings),
    }
}

fn check(path: &std::path::Path, settings: &Settings, manifests: Option<PathBuf>) -> ExitCode {
    if let Err(e) = check_default_certificate(settings) {
        eprintln!("sluice: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}: settings ok", path.display());
    let dir = match (manifests, &settings.source) {
        (Some(dir), _) => dir,
        (None, sluice_config::settings::SourceSettings::Files { directory, .. }) => {
            directory.clone()
        }
        (None, _) => return ExitCode::SUCCESS,
    };
    let (store, errors) = match sluice::files::read_folder(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(1);
        }
    };
    for e in &errors {
        eprintln!("sluice: {e}");
    }
    let policy = sluice_config::ClassPolicy::from(settings);
    let defaults = sluice_config::BuildDefaults::from(settings);
    let shared = store.shared();
    let mut snapshot = sluice_config::build_refs(&shared.refs(), &policy, &defaults);
    // Certificates and basic-auth users are checked by the step a publish runs on a built
    // snapshot before it goes live.
    match sluice::tls::certs::ServingCert::self_signed() {
        Ok(fallback) => {
            let mut builder =
                sluice::tls::TlsStoreBuilder::new(std::sync::Arc::new(fallback), None);
            sluice::state::finish(&mut snapshot, &mut builder, &store.secret_material());
        }
        Err(e) => eprintln!("sluice: cannot check certificates: {e}"),
    }
    print!("{}", sluice_config::report::render(&snapshot));
    if errors.is_empty() && snapshot.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Why `sluice check` refuses the default certificate files; names the setting and the file.
#[derive(Debug, thiserror::Error)]
enum DefaultCertificateError {
    #[error("{setting}: cannot read {path}: {source}", path = .path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tls.default_certificate_file and tls.default_key_file: {0}")]
    Unusable(#[source] sluice::tls::certs::CertFileError),
}

/// Loads the default certificate files as start-up will, so that a file that is missing,
/// unreadable or not a matching certificate and key fails the check rather than the start.
fn check_default_certificate(settings: &Settings) -> Result<(), DefaultCertificateError> {
    let sluice_config::settings::DefaultCertificate::Files { certificate, key } =
        &settings.tls.default_certificate
    else {
        return Ok(());
    };
    for (setting, file) in [
        ("tls.default_certificate_file", certificate),
        ("tls.default_key_file", key),
    ] {
        if let Err(source) = std::fs::File::open(file) {
            return Err(DefaultCertificateError::Unreadable {
                setting,
                path: file.clone(),
                source,
            });
        }
    }
    sluice::tls::certs::ServingCert::from_files(certificate, key)
        .map(|_| ())
        .map_err(DefaultCertificateError::Unusable)
}

fn run(settings: Settings) -> ExitCode {
    sluice::logging::init(&settings.log_level, settings.log_format);
    let running = match sluice::start(settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "sluice could not start");
            eprintln!("sluice: {e}");
            return ExitCode::from(1);
        }
    };
    let stopper = running.stopper();
    let signals = std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || wait_for_signal(stopper));
    if let Err(e) = signals {
        eprintln!("sluice: cannot watch for signals: {e}");
        running.shutdown();
    }
    running.wait();
    ExitCode::SUCCESS
}

/// Blocks until SIGTERM or SIGINT, then starts the graceful shutdown.
fn wait_for_signal(stopper: tokio::sync::watch::Sender<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot watch for signals: {e}");
            return;
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("sluice: cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        let _ = stopper.send(true);
    });
}
