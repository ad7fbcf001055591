//! Reading the settings file: the one place its bytes come from. `sluice-config` does no I/O,
//! so it validates the text ([`Settings::from_toml`]) and this reads it.

use std::path::Path;

use sluice_config::{ConfigError, Settings};

/// Reads and validates the settings file at `path`. Relative paths inside it are taken relative
/// to the folder the file is in; an unreadable file is [`ConfigError::FileOpen`], naming it.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileOpen {
        path: path.to_path_buf(),
        source,
    })?;
    Settings::from_toml(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_reported_with_its_path() {
        let err = load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::FileOpen { .. }));
        assert!(err.to_string().contains("/nonexistent/sluice.toml"));
    }

    #[test]
    fn a_file_is_validated_with_relative_paths_taken_from_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "[source.files]\ndirectory = \"routes\"\n").unwrap();
        match load(&path).unwrap().source {
            sluice_config::settings::SourceSettings::Files { directory, .. } => {
                assert_eq!(directory, dir.path().join("routes"))
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "[server]\nworker_thread = 3\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2:", path.display())), "{err}");
    }
}
