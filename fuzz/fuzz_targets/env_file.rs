//! An instance's `.env` as the administrator (or a snapshot) left it: the
//! reader must not panic on any text. Kept to one call so it is easy to
//! re-point when the reader changes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = upkeep::compose::env::parse_env(text);
    }
});
