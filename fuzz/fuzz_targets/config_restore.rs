//! A snapshot's config.tar restored into an instance's home that holds a
//! release's defaults and an administrator's link to a folder elsewhere: no
//! panic, nothing outside the home written (through the link neither), and
//! a refused archive leaves the home exactly as it was.
#![no_main]

#[path = "sandbox.rs"]
mod sandbox;

use libfuzzer_sys::fuzz_target;
use std::fs;

fuzz_target!(|data: &[u8]| {
    let mut sb = sandbox::Sandbox::new();
    let home = sb.inside.clone();
    let home = home.as_path();
    fs::write(home.join(".env"), "DEFAULT=1\n").unwrap();
    fs::create_dir(home.join("etc")).unwrap();
    fs::write(home.join("etc/app.conf"), "default\n").unwrap();
    std::os::unix::fs::symlink("../outside", home.join("certs")).unwrap();
    sb.seal();
    let home_before = sandbox::listing(home, None);
    let res = upkeep::snapshot::config::restore(data, home);
    sb.assert_outside_untouched();
    if res.is_err() {
        assert_eq!(home_before, sandbox::listing(home, None), "a refused archive changed the home");
    }
});
