//! File writing that never leaves a partial file behind.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        // On disk before the rename, so even a power cut leaves the old file or the new one.
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Removes the temporary files a killed writer left in `dir` (`.<name>.tmp<pid>`), so
/// only complete files remain.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_tmp = name.starts_with('.')
            && name.rsplit_once(".tmp").is_some_and(|(_, pid)| pid.chars().all(|c| c.is_ascii_digit()) && !pid.is_empty());
        if is_tmp {
            std::fs::remove_file(e.path()).with_context(|| format!("cannot remove the stale temporary {}", e.path().display()))?;
        }
    }
    Ok(())
}
