//! Writing files so that nobody ever sees half of one: write a temporary file in the same
//! directory, then rename it into place.

use std::io::Write;
use std::path::Path;

use crate::error::{DriverError, Result};

pub fn write_atomically(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::result::Result<(), String>) -> Result<()> {
    let fail = |reason: String| DriverError::Write { path: path.to_path_buf(), reason };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(e.to_string()))?;
    write(tmp.as_file_mut()).map_err(fail)?;
    tmp.as_file_mut().flush().map_err(|e| fail(e.to_string()))?;
    // Temporary files are private (0600); outputs are ordinary files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| fail(e.to_string()))?;
    }
    tmp.persist(path).map_err(|e| fail(e.to_string()))?;
    Ok(())
}

pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |f| f.write_all(bytes).map_err(|e| e.to_string()))
}
