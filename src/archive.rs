//! Recorded `/coins/markets` answers on disk: `.json` files, or their gzip (`.json.gz`).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// Where the repository keeps a year of real daily answers (2024), replayed when no path is given.
pub const SHIPPED_YEAR: &str = "data/daily-2024";

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ArchiveError {
    pub path: PathBuf,
    pub problem: String,
}

fn error(path: &Path, problem: impl Into<String>) -> ArchiveError {
    ArchiveError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The shipped year: under the working directory (a checkout), else under the checkout this
/// binary was built from.
pub fn shipped_year() -> Result<PathBuf, ArchiveError> {
    [
        PathBuf::from(SHIPPED_YEAR),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_YEAR),
    ]
    .into_iter()
    .find(|dir| dir.is_dir())
    .ok_or_else(|| {
        error(
            Path::new(SHIPPED_YEAR),
            "not found: run from the repository's root, or name the files or directory to replay",
        )
    })
}

/// The answer files among `paths`, sorted by path: a file as given, a directory for the `.json`
/// and `.json.gz` files directly in it.
pub fn answer_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            if !path.is_file() {
                return Err(error(path, "no such file or directory"));
            }
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| error(path, e.to_string()))?;
        let before = files.len();
        for entry in entries {
            let file = entry.map_err(|e| error(path, e.to_string()))?.path();
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if file.is_file() && (name.ends_with(".json") || name.ends_with(".json.gz")) {
                files.push(file);
            }
        }
        if files.len() == before {
            return Err(error(path, "holds no .json or .json.gz file"));
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The text of one answer file, decompressed when it is gzip (whatever its name).
pub fn read_answer(path: &Path) -> Result<String, ArchiveError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, e.to_string()))?;
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        let mut text = Vec::new();
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut text)
            .map_err(|e| error(path, format!("not a readable gzip file: {e}")))?;
        text
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| error(path, format!("not UTF-8 text: {e}")))
}
