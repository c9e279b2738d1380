//! Pack files: encrypted blobs one after another, then the encrypted header
//! listing them, then the header's length (4 bytes, little endian).

use super::crypto::{Key, OVERHEAD};
use super::error::{RepoError, Result};
use super::format::{BlobType, IndexBlob};
use super::id::Id;

/// Packs are closed once they reach this size (restic's default).
pub const TARGET_SIZE: usize = 16 * 1024 * 1024;

const ENTRY_PLAIN: usize = 1 + 4 + 32;
const ENTRY_COMPRESSED: usize = 1 + 4 + 4 + 32;

/// Bytes a pack can reach: it is closed at the first blob that takes it to
/// [`TARGET_SIZE`], and a blob holds at most one chunk (plus encryption and,
/// when compression does not help, nothing else).
pub const MAX_PACK_SIZE: usize = TARGET_SIZE + super::chunker::MAX_SIZE + OVERHEAD;

/// A pack being filled in memory.
#[derive(Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    blobs: Vec<IndexBlob>,
}

impl PackWriter {
    /// A pack filled into `buf` (a finished pack's bytes, reused: allocating
    /// and faulting in 16 MiB per pack costs as much as hashing it).
    pub fn with_buffer(mut buf: Vec<u8>) -> PackWriter {
        buf.clear();
        buf.reserve(MAX_PACK_SIZE + 64 * 1024);
        PackWriter {
            buf,
            blobs: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Appends an encrypted blob. `uncompressed` is the plaintext length of a
    /// compressed blob, `None` for a stored one.
    pub fn add(&mut self, tpe: BlobType, id: Id, encrypted: &[u8], uncompressed: Option<u32>) {
        self.blobs.push(IndexBlob {
            id,
            tpe,
            offset: self.buf.len() as u32,
            length: encrypted.len() as u32,
            uncompressed_length: uncompressed,
        });
        self.buf.extend_from_slice(encrypted);
    }

    /// Closes the pack: returns its id, its bytes and its blobs for the index.
    pub fn finish(self, key: &Key) -> (Id, Vec<u8>, Vec<IndexBlob>) {
        let mut header = Vec::with_capacity(self.blobs.len() * ENTRY_COMPRESSED);
        for b in &self.blobs {
            let t = match (b.tpe, b.uncompressed_length.is_some()) {
                (BlobType::Data, false) => 0u8,
                (BlobType::Tree, false) => 1,
                (BlobType::Data, true) => 2,
                (BlobType::Tree, true) => 3,
            };
            header.push(t);
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(u) = b.uncompressed_length {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(&b.id.0);
        }
        let enc = key.encrypt(&header);
        let mut buf = self.buf;
        buf.extend_from_slice(&enc);
        buf.extend_from_slice(&(enc.len() as u32).to_le_bytes());
        (Id::hash(&buf), buf, self.blobs)
    }
}

/// Compresses (when `compress` and it helps) and encrypts blobs, reusing its
/// zstd context and buffers from blob to blob.
pub struct BlobEncoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    packed: Vec<u8>,
    sealed: Vec<u8>,
}

impl BlobEncoder {
    /// `compress`: the repository is version 2 or later.
    pub fn new(compress: bool) -> BlobEncoder {
        BlobEncoder {
            // without a context (it cannot be made) blobs are stored uncompressed
            zstd: compress
                .then(|| zstd::bulk::Compressor::new(3).ok())
                .flatten(),
            packed: Vec::new(),
            sealed: Vec::new(),
        }
    }

    /// The encrypted blob, and its plaintext length when it is compressed.
    pub fn encode(&mut self, key: &Key, plain: &[u8]) -> (&[u8], Option<u32>) {
        if let Some(z) = &mut self.zstd {
            self.packed.clear();
            self.packed
                .reserve(zstd::zstd_safe::compress_bound(plain.len()));
            if let Ok(n) = z.compress_to_buffer(plain, &mut self.packed) {
                if n < plain.len() {
                    key.encrypt_into(&self.packed, &mut self.sealed);
                    return (&self.sealed, Some(plain.len() as u32));
                }
            }
        }
        key.encrypt_into(plain, &mut self.sealed);
        (&self.sealed, None)
    }
}

/// Decodes a pack header from the pack's tail. `tail` must hold the whole
/// encrypted header plus the 4 length bytes at its end; `pack_len` is the pack
/// file's size.
pub fn parse_header(key: &Key, tail: &[u8], pack_len: u64) -> Result<Vec<IndexBlob>> {
    if tail.len() < 4 {
        return Err(RepoError::Corrupt("pack file is too short".into()));
    }
    let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as usize;
    if hlen + 4 > tail.len() || (hlen as u64) + 4 > pack_len || hlen < OVERHEAD {
        return Err(RepoError::Corrupt(format!(
            "pack header length {hlen} is invalid"
        )));
    }
    let enc = &tail[tail.len() - 4 - hlen..tail.len() - 4];
    let header = key.decrypt(enc).ok_or_else(|| {
        RepoError::Corrupt("pack header does not decrypt (damaged or foreign)".into())
    })?;
    let mut blobs = Vec::new();
    let mut pos = 0usize;
    let mut offset = 0u64;
    while pos < header.len() {
        let t = header[pos];
        let need = if t >= 2 {
            ENTRY_COMPRESSED
        } else {
            ENTRY_PLAIN
        };
        if t > 3 || pos + need > header.len() {
            return Err(RepoError::Corrupt(
                "pack header has an invalid entry".into(),
            ));
        }
        let length = u32::from_le_bytes(header[pos + 1..pos + 5].try_into().expect("4"));
        let (uncompressed, idpos) = if t >= 2 {
            (
                Some(u32::from_le_bytes(
                    header[pos + 5..pos + 9].try_into().expect("4"),
                )),
                pos + 9,
            )
        } else {
            (None, pos + 5)
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&header[idpos..idpos + 32]);
        blobs.push(IndexBlob {
            id: Id(id),
            tpe: if t % 2 == 0 {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            offset: offset as u32,
            length,
            uncompressed_length: uncompressed,
        });
        offset += u64::from(length);
        pos += need;
    }
    if offset + hlen as u64 + 4 != pack_len {
        return Err(RepoError::Corrupt(format!(
            "pack size {pack_len} does not match its header ({} bytes of blobs)",
            offset
        )));
    }
    Ok(blobs)
}

/// Decrypts, decompresses and verifies one blob read from a pack.
pub fn decode_blob(key: &Key, b: &IndexBlob, raw: &[u8]) -> Result<Vec<u8>> {
    let plain = key
        .decrypt(raw)
        .ok_or_else(|| RepoError::Corrupt(format!("blob {} does not decrypt", b.id)))?;
    let data = match b.uncompressed_length {
        Some(n) => zstd::bulk::decompress(&plain, n as usize)
            .map_err(|e| RepoError::Corrupt(format!("blob {} does not decompress: {e}", b.id)))?,
        None => plain,
    };
    if Id::hash(&data) != b.id {
        return Err(RepoError::Corrupt(format!(
            "blob {} has wrong content",
            b.id
        )));
    }
    Ok(data)
}
