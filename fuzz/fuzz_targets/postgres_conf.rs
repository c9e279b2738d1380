//! An old cluster's `postgresql.conf` / `postgresql.auto.conf` as a
//! pg_upgrade carries it: no panic, and what is not carried never stays
//! active (every output line is a line of the input or a comment).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upkeep::postgres::conf::{carry_settings, setting_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let known = |n: &str| n.len() % 2 == 0;
    let carried = carry_settings(text, "postgresql.conf", known);
    let input: Vec<&str> = text.lines().collect();
    for line in carried.text.lines() {
        match setting_name(line) {
            None => {}
            Some(name) => {
                assert!(known(&name), "an unknown setting stays active: {line:?}");
                assert!(input.contains(&line), "a line not in the input: {line:?}");
            }
        }
    }
});
