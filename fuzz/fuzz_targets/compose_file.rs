//! A vendor's compose file: the reader must not panic, nor let YAML aliases
//! or nesting blow memory up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = upkeep::compose::file::ComposeFile::parse(text);
    }
});
