//! What `make fuzz` drives (the `fuzzing` feature only): the WAL's reading of segment files
//! as a crash or a bad disk may leave them.

use std::path::Path;

/// Writes `bytes` as the first segment of a WAL in `dir`, opens the log (which scans and
/// checks every record) and decodes every record it offers as a log entry, as the log store
/// does on start. Must not panic, whatever the bytes.
pub fn open_segment_bytes(bytes: &[u8], dir: &Path) {
    let segment = dir.join(format!("{:020}.wal", 1));
    std::fs::write(&segment, bytes).expect("writing the segment");
    let Ok(wal) = crate::wal::Wal::open(dir, None) else {
        return;
    };
    let Some((first, last)) = wal.bounds() else {
        return;
    };
    for index in first..=last.min(first.saturating_add(100_000)) {
        if let Ok(record) = wal.read(index) {
            let _ = crate::log_store::decode_for_fuzzing(index, record);
        }
    }
}
