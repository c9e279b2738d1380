//! A whole volume travels through a FIFO (the image's GNU tar in a helper)
//! when the engine is local, through the engine's archive endpoint
//! otherwise. Real engine, real images: both ways must give and take the
//! same files, owners, modes, times and links, and the pipe must give way
//! to the archive endpoint, or fail clearly, where it cannot work.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use sha2::{Digest, Sha256};
use upkeep::docker::{Engine, VolumeTransport};

const IMAGE: &str = "upkeep-test/postgres:15";

/// A volume that removes itself.
struct Volume(String);

impl Volume {
    fn new(prefix: &str) -> Volume {
        let name = common::unique(prefix);
        docker(&["volume", "create", &name]);
        Volume(name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Owners, modes, odd names, links of both kinds, a FIFO, a device, a
/// path past tar's 100 bytes, an empty folder and a setuid file.
const TRICKY: &str = r#"set -e
cd /v
long=$(printf 'd%.0s' $(seq 1 70))/$(printf 'e%.0s' $(seq 1 70))
mkdir -p dir/empty "$long"
printf hello > dir/a.txt
chmod 640 dir/a.txt
chown 999:999 dir/a.txt
ln dir/a.txt dir/hard.txt
ln -s a.txt dir/link
ln -s /nowhere dangling
head -c 300000 /dev/urandom > dir/random.bin
chmod 4755 dir/random.bin
printf deep > "$long/$(printf 'f%.0s' $(seq 1 120)).txt"
printf x > 'sp ace ü.txt'
mkfifo dir/fifo
mknod dir/null c 1 3
chmod 1777 dir/empty
chown 1234:5678 dir/empty
touch -h -d '2021-05-06 07:08:09.5' dir/a.txt dir/link "$long"
touch -d '2020-01-02 03:04:05' dir
"#;

fn fill(volume: &str) {
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/v"),
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        TRICKY,
    ]);
}

fn engine(transport: VolumeTransport) -> Engine {
    let mut engine = Engine::connect().expect("the Docker Engine must be reachable");
    engine.set_volume_transport(transport);
    engine
}

fn read_all(engine: &Engine, volume: &str, image: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    engine.read_volume(volume, image)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Each path's kind, mode, owner, time and content (a hard link's is its
/// target's), plus the groups of hard-linked paths: what the stream says,
/// whichever path of a group the walk met first.
fn entries(tar: &[u8]) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut contents: BTreeMap<String, String> = BTreeMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let h = entry.header().clone();
        let kind = h.entry_type();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let target = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().trim_end_matches('/').to_string());
        let (kind, body) = match kind {
            tar::EntryType::Link => {
                let to = target.clone().unwrap();
                links.push((path.clone(), to.clone()));
                ("file".to_string(), format!("<{to}>"))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let digest = hex::encode(Sha256::digest(&data));
                contents.insert(path.clone(), digest.clone());
                ("file".to_string(), digest)
            }
            tar::EntryType::Symlink => ("symlink".to_string(), target.unwrap()),
            tar::EntryType::Char | tar::EntryType::Block => (
                format!("{kind:?}"),
                format!(
                    "{:?},{:?}",
                    h.device_major().unwrap(),
                    h.device_minor().unwrap()
                ),
            ),
            other => (format!("{other:?}"), String::new()),
        };
        out.insert(
            path,
            format!(
                "{kind} {:o} {}:{} {} {body}",
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap()
            ),
        );
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, to) in links {
        let digest = contents
            .get(&to)
            .cloned()
            .expect("a hard link to a file of the stream");
        let line = out.get_mut(&path).unwrap();
        *line = line.replace(&format!("<{to}>"), &digest);
        groups
            .entry(to.clone())
            .or_insert_with(|| vec![to])
            .push(path);
    }
    let mut groups: Vec<Vec<String>> = groups
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (out, groups)
}

#[test]
fn a_volume_reads_the_same_through_the_pipe_and_the_archive_endpoint() {
    let volume = Volume::new("vtread");
    fill(&volume.0);
    let piped = read_all(&engine(VolumeTransport::Pipe), &volume.0, IMAGE).unwrap();
    let archived = read_all(&engine(VolumeTransport::Archive), &volume.0, IMAGE).unwrap();
    let (pipe_entries, pipe_links) = entries(&piped);
    let (archive_entries, archive_links) = entries(&archived);
    // what the volume holds, seen through the pipe
    let a = &pipe_entries["./dir/a.txt"];
    assert!(a.starts_with("file 640 999:999 1620284889 "), "{a}");
    assert!(pipe_entries["./dir/empty"].starts_with("Directory 1777 1234:5678 "));
    assert!(pipe_entries["./dir/random.bin"].starts_with("file 4755 0:0 "));
    assert_eq!(
        pipe_entries["./dir/link"].split(' ').next_back(),
        Some("a.txt")
    );
    assert!(pipe_entries["./dir/null"].starts_with("Char 644 0:0"));
    assert!(pipe_entries["./dir/fifo"].starts_with("Fifo "));
    assert!(
        pipe_entries["./dir"].contains(" 1577934245 "),
        "{}",
        pipe_entries["./dir"]
    );
    assert!(
        pipe_entries.keys().any(|p| p.len() > 250),
        "the long path is in"
    );
    assert_eq!(
        pipe_links,
        vec![vec!["./dir/a.txt".to_string(), "./dir/hard.txt".into()]]
    );
    assert_eq!(pipe_entries, archive_entries);
    assert_eq!(pipe_links, archive_links);
}

#[test]
fn a_volume_written_through_the_pipe_holds_what_the_archive_endpoint_writes() {
    let source = Volume::new("vtsrc");
    fill(&source.0);
    let archive = engine(VolumeTransport::Archive);
    let stream = read_all(&archive, &source.0, IMAGE).unwrap();
    let (piped, archived) = (Volume::new("vtpipe"), Volume::new("vtarch"));
    engine(VolumeTransport::Pipe)
        .write_volume(
            &piped.0,
            IMAGE,
            Dribble(std::io::Cursor::new(stream.clone())),
        )
        .unwrap();
    archive
        .write_volume(&archived.0, IMAGE, std::io::Cursor::new(stream.clone()))
        .unwrap();
    let original = entries(&stream);
    assert!(original.0.len() > 10, "{original:?}");
    assert_eq!(
        entries(&read_all(&archive, &piped.0, IMAGE).unwrap()),
        original
    );
    let by_endpoint = entries(&read_all(&archive, &archived.0, IMAGE).unwrap());
    assert_eq!(without_root_time(by_endpoint), without_root_time(original));
}

/// A stream that comes in odd-sized pieces, as a repository's can: the
/// FIFO then hands tar reads of no whole number of blocks.
struct Dribble<R>(R);

impl<R: Read> Read for Dribble<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(777);
        self.0.read(&mut buf[..n])
    }
}

/// The engine's archive endpoint leaves the time of the folder it unpacks
/// into as the unpacking set it (GNU tar restores it from `./`).
fn without_root_time(
    (mut entries, links): (BTreeMap<String, String>, Vec<Vec<String>>),
) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    let root = entries.get_mut(".").expect("the stream has its root");
    let fields: Vec<&str> = root.split(' ').collect();
    *root = format!("{} {} {}", fields[0], fields[1], fields[2]);
    (entries, links)
}

#[test]
fn a_broken_stream_written_through_the_pipe_is_an_error() {
    let source = Volume::new("vtbsrc");
    fill(&source.0);
    let stream = read_all(&engine(VolumeTransport::Archive), &source.0, IMAGE).unwrap();
    // cut inside random.bin's 300000 bytes, wherever it sits in the stream
    let cut = stream.len() / 2;
    let target = Volume::new("vtbroken");
    let e = engine(VolumeTransport::Pipe)
        .write_volume(
            &target.0,
            IMAGE,
            std::io::Cursor::new(stream[..cut].to_vec()),
        )
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("tar exited with 2"), "{text}");
    assert!(text.contains(&target.0), "{text}");
}

/// An image whose only tar is BusyBox's, which knows none of GNU tar's
/// options: the pipe cannot be used with it.
struct BusyBoxImage(String);

impl BusyBoxImage {
    fn new() -> BusyBoxImage {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for tool in ["tar", "true", "sh"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        let name = format!("upkeep-test/busybox-{}:1", common::unique("bb"));
        let tar = Command::new("tar")
            .args(["-C", &dir.path().to_string_lossy(), "-cf", "-", "."])
            .output()
            .unwrap();
        let mut import = Command::new("docker")
            .args(["import", "-", &name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(import.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
        drop(import.stdin.take());
        assert!(import.wait().unwrap().success(), "docker import of {name}");
        BusyBoxImage(name)
    }
}

impl Drop for BusyBoxImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn without_gnu_tar_the_pipe_gives_way_to_the_archive_endpoint_or_fails_clearly() {
    let image = BusyBoxImage::new();
    let volume = Volume::new("vtbb");
    fill(&volume.0);
    let reference =
        entries(&read_all(&engine(VolumeTransport::Archive), &volume.0, IMAGE).unwrap());
    let auto = read_all(&engine(VolumeTransport::Auto), &volume.0, &image.0).unwrap();
    assert_eq!(entries(&auto), reference);
    let e = read_all(&engine(VolumeTransport::Pipe), &volume.0, &image.0).unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("the pipe cannot be used"), "{text}");
    assert!(
        text.contains("unrecognized option"),
        "BusyBox's own words: {text}"
    );

    // writing: the stream the pipe refused is still whole for the endpoint
    let target = Volume::new("vtbbw");
    engine(VolumeTransport::Auto)
        .write_volume(&target.0, &image.0, std::io::Cursor::new(auto))
        .unwrap();
    let written = read_all(&engine(VolumeTransport::Archive), &target.0, IMAGE).unwrap();
    assert_eq!(
        without_root_time(entries(&written)),
        without_root_time(reference)
    );
    let e = engine(VolumeTransport::Pipe)
        .write_volume(&target.0, &image.0, std::io::Cursor::new(Vec::new()))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("the pipe cannot be used"),
        "{e:#}"
    );
}

#[test]
fn a_reader_dropped_half_way_leaves_no_helper_behind() {
    let volume = Volume::new("vtleft");
    fill(&volume.0);
    let engine = engine(VolumeTransport::Pipe);
    let mut archive = engine.read_volume(&volume.0, IMAGE).unwrap();
    let mut head = [0u8; 4096];
    archive.read_exact(&mut head).unwrap();
    let filter = format!("volume={}", volume.0);
    assert_ne!(
        docker(&["ps", "-aq", "--filter", &filter]).trim(),
        "",
        "a helper streams"
    );
    drop(archive);
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]).trim(), "");
    // and the volume reads whole again afterwards
    assert!(
        entries(&read_all(&engine, &volume.0, IMAGE).unwrap())
            .0
            .len()
            > 10
    );
}
