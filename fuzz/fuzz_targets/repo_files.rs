//! The readers of files anyone with write access to a repository's storage
//! can plant: key files (read before any password is checked), decrypted
//! snapshot and index files, and export files given to `import`. The first
//! byte picks the reader. No panic, memory bounded (libFuzzer's -rss_limit_mb
//! and -malloc_limit_mb catch a crafted size that is believed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upkeep::repo::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => fuzzing::open_key_file(rest, "fuzz-password"),
        1 => fuzzing::read_snapshot(rest),
        2 => fuzzing::read_index(rest),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("export.tar");
            std::fs::write(&file, rest).unwrap();
            fuzzing::read_export(&file);
        }
    }
});
