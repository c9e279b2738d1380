//! A snapshot's `postgres/base.tar` as a physical restore reads it before
//! writing it into the data volume: no panic on any bytes, and when the
//! first header is accepted, the output is one root-folder entry (mode
//! 0700) followed by the input exactly as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let Ok(mut out) = upkeep::postgres::with_root_entry(data) else {
        return;
    };
    let mut bytes = Vec::new();
    if out.read_to_end(&mut bytes).is_err() {
        return;
    }
    assert_eq!(&bytes[512..], data, "the backup's own bytes were changed");
    let root = tar::Header::from_byte_slice(&bytes[..512]);
    assert_eq!(root.mode().unwrap(), 0o700);
    assert_eq!(root.path().unwrap().to_str(), Some("./"));
});
