//! A vendor bundle (a tar) unpacked into a staging folder: no panic, nothing
//! outside the staging folder written, and an accepted bundle has no link
//! that leads out of it.
#![no_main]

#[path = "sandbox.rs"]
mod sandbox;

use libfuzzer_sys::fuzz_target;
use std::fs;

fuzz_target!(|data: &[u8]| {
    let mut sb = sandbox::Sandbox::new();
    let bundle = sb.root.join("bundle.tar");
    fs::write(&bundle, data).unwrap();
    sb.seal();
    let res = upkeep::bundle::unpack(&bundle, &sb.inside);
    sb.assert_outside_untouched();
    if res.is_ok() {
        for (rel, what) in sandbox::listing(&sb.inside, None) {
            if what.starts_with("link") {
                let link = upkeep::untar::check_link_resolves_inside(&sb.inside, &rel);
                assert!(link.is_ok(), "accepted bundle has an escaping link {rel:?}");
            }
        }
    }
});
