//! The old release's Postgres installation, brought out of its image into a
//! scratch volume the new image's helpers mount: the new image has only the
//! new binaries, and `pg_upgrade` needs the old ones too.
//!
//! The old executables need the old image's shared libraries (a newer
//! Debian has other versions of libicu, libldap, libssl), but a global
//! `LD_LIBRARY_PATH` would make the *new* binaries load the old `libpq`. So
//! the closure goes into a folder of its own and each old executable gets a
//! wrapper that sets the variable for that exec alone. The real tree keeps
//! its `usr/lib/postgresql/M/bin` tail, so Postgres's relocation finds its
//! sharedir and pkglibdir beside it.

use anyhow::{bail, Result};

use crate::docker::Engine;

/// Where the helpers mount the scratch volume.
pub const MOUNT: &str = "/upkeep-old";

/// Fills the scratch volume from the old image (as root, no network): the
/// Debian layout's bindir, libdir and sharedir, the `ldd` closure of every
/// executable and library without glibc's own (nor a program loader named
/// by path), one wrapper per executable,
/// and last the marker naming the image it came from. `$1` major, `$2`
/// image id.
const BUILD: &str = r#"set -eu
M=$1 O=/upkeep-old
rm -rf "$O/.upkeep-image" "$O/real" "$O/libs" "$O/bin"
[ -x "/usr/lib/postgresql/$M/bin/postgres" ] || { echo "no /usr/lib/postgresql/$M/bin/postgres in the old image (not the Debian layout)"; exit 3; }
[ -d "/usr/share/postgresql/$M" ] || { echo "no /usr/share/postgresql/$M in the old image"; exit 3; }
command -v ldd >/dev/null || { echo "no ldd in the old image"; exit 3; }
mkdir -p "$O/real/usr/lib/postgresql" "$O/real/usr/share/postgresql" "$O/libs" "$O/bin"
cp -a "/usr/lib/postgresql/$M" "$O/real/usr/lib/postgresql/"
cp -a "/usr/share/postgresql/$M" "$O/real/usr/share/postgresql/"
for f in "/usr/lib/postgresql/$M"/bin/* "/usr/lib/postgresql/$M"/lib/*.so; do ldd "$f" 2>/dev/null || true; done |
  awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u | while read -r n p; do
    case "$n" in */*|libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|libresolv*|ld-linux*|libutil*) continue ;; esac
    cp -L "$p" "$O/libs/$n"
  done
for f in "$O/real/usr/lib/postgresql/$M"/bin/*; do
  b=${f##*/}
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/libs exec %s/real/usr/lib/postgresql/%s/bin/%s "$@"\n' "$O" "$O" "$M" "$b" >"$O/bin/$b"
  chmod 755 "$O/bin/$b"
done
echo "libraries: $(ls "$O/libs" | wc -l)"
sync
printf '%s\n' "$2" >"$O/.upkeep-image.tmp" && mv "$O/.upkeep-image.tmp" "$O/.upkeep-image" && sync
"#;

/// In the new image: the old executables run (three version probes), and the
/// new bindir has what `pg_upgrade` needs. `$1` new bindir.
const PROBE: &str = r#"
/upkeep-old/bin/postgres -V && /upkeep-old/bin/pg_ctl --version && /upkeep-old/bin/pg_controldata --version || exit 4
for t in pg_upgrade initdb postgres; do [ -x "$1/$t" ] || { echo "no $1/$t in the new image"; exit 5; }; done
"#;

/// The scratch volume of the upgrade to instance `new`.
pub fn volume_name(new: &str) -> String {
    format!("{new}_upkeep-pg-old")
}

/// Makes the scratch volume hold `old_image`'s Postgres `major` (kept when
/// its marker already names that image), then proves the old executables
/// run in `new_image`. `Ok(Err(why))` when they cannot: the caller falls
/// back to a dump.
pub fn prepare(
    engine: &Engine,
    volume: &str,
    instance: &str,
    old_image: &str,
    major: u32,
    new_image: &str,
    new_bindir: &str,
) -> Result<std::result::Result<(), String>> {
    let id = engine
        .image_id(old_image)?
        .unwrap_or_else(|| old_image.to_string());
    engine.ensure_helper_volume(volume, instance)?;
    let mount = [(volume, MOUNT, false)];
    let (_, marker) = engine.run_with_volumes(
        new_image,
        &[
            "sh",
            "-c",
            "cat /upkeep-old/.upkeep-image 2>/dev/null || true",
        ],
        &mount,
    )?;
    if marker.trim() != id {
        let m = major.to_string();
        let (code, out) =
            engine.run_with_volumes(old_image, &["sh", "-c", BUILD, "sh", &m, &id], &mount)?;
        if code == 3 {
            return Ok(Err(format!("{} ({old_image})", out.trim())));
        }
        if code != 0 {
            bail!(
                "bringing Postgres {major} out of {old_image} failed (exit {code}): {}",
                out.trim()
            );
        }
        tracing::info!(
            "Postgres {major} of {old_image} brought out: {}",
            out.trim()
        );
    }
    let (code, out) = engine.run_with_volumes(
        new_image,
        &["sh", "-c", PROBE, "sh", new_bindir],
        &[(volume, MOUNT, true)],
    )?;
    let expected = format!("(PostgreSQL) {major}.");
    if code != 0 || out.matches(&expected).count() != 3 {
        return Ok(Err(format!(
            "the Postgres {major} executables of {old_image} do not run in {new_image}: {}",
            out.trim()
        )));
    }
    Ok(Ok(()))
}
