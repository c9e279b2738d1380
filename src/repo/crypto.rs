//! restic's authenticated encryption: AES-256-CTR, then Poly1305-AES over the
//! ciphertext (`IV ‖ ciphertext ‖ MAC`), and the scrypt-protected key files.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use aes::{Aes128, Aes256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use poly1305::Poly1305;
use serde::{Deserialize, Serialize};

use super::error::{RepoError, Result};

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// Bytes added by encryption: 16 bytes IV and 16 bytes MAC.
pub const OVERHEAD: usize = 32;

/// Fills `buf` with bytes from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// A restic master key: an AES-256 key and a Poly1305-AES key (k, r).
#[derive(Clone)]
pub struct Key {
    encrypt: [u8; 32],
    mac_k: [u8; 16],
    mac_r: [u8; 16],
}

impl Key {
    /// A fresh random key.
    pub fn random() -> Key {
        let mut b = [0u8; 64];
        random_bytes(&mut b);
        Key::from_bytes(&b)
    }

    /// Key material as laid out by scrypt's 64 output bytes: encryption key, k, r.
    fn from_bytes(b: &[u8; 64]) -> Key {
        let mut k = Key {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        k.encrypt.copy_from_slice(&b[..32]);
        k.mac_k.copy_from_slice(&b[32..48]);
        k.mac_r.copy_from_slice(&b[48..]);
        k
    }

    fn mac(&self, nonce: &[u8], data: &[u8]) -> [u8; 16] {
        // Poly1305-AES: s = AES_k(nonce); the one-time key is r ‖ s (r is clamped by poly1305).
        let mut s = aes::Block::clone_from_slice(nonce);
        Aes128::new_from_slice(&self.mac_k)
            .expect("16-byte key")
            .encrypt_block(&mut s);
        let mut otk = [0u8; 32];
        otk[..16].copy_from_slice(&self.mac_r);
        otk[16..].copy_from_slice(&s);
        let tag = Poly1305::new(poly1305::Key::from_slice(&otk)).compute_unpadded(data);
        tag.into()
    }

    /// Encrypts and authenticates `plain`: `IV ‖ ciphertext ‖ MAC`.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encrypt_into(plain, &mut out);
        out
    }

    /// [`encrypt`](Self::encrypt) into `out` (cleared first), so a caller
    /// encrypting many blobs can reuse one buffer.
    pub fn encrypt_into(&self, plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(plain.len() + OVERHEAD);
        let mut iv = [0u8; 16];
        random_bytes(&mut iv);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plain);
        Aes256Ctr::new(&self.encrypt.into(), &iv.into()).apply_keystream(&mut out[16..]);
        let tag = self.mac(&iv, &out[16..]);
        out.extend_from_slice(&tag);
    }

    /// Checks the MAC and decrypts; `None` if the data was not made with this key
    /// or was changed since.
    pub fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < OVERHEAD {
            return None;
        }
        let (iv, rest) = data.split_at(16);
        let (cipher, tag) = rest.split_at(rest.len() - 16);
        let expect = self.mac(iv, cipher);
        // constant-time comparison
        if expect
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return None;
        }
        let mut plain = cipher.to_vec();
        let iv: [u8; 16] = iv.try_into().expect("16 bytes");
        Aes256Ctr::new(&self.encrypt.into(), &iv.into()).apply_keystream(&mut plain);
        Some(plain)
    }
}

/// A key file in `keys/`: the master key, encrypted with a key derived from the
/// password by scrypt.
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub hostname: String,
    pub kdf: String,
    #[serde(rename = "N")]
    pub n: u64,
    pub r: u32,
    pub p: u32,
    pub salt: String,
    pub data: String,
}

#[derive(Serialize, Deserialize)]
struct MasterKeyJson {
    mac: MacJson,
    encrypt: String,
}

#[derive(Serialize, Deserialize)]
struct MacJson {
    k: String,
    r: String,
}

/// The largest scrypt cost a key file may ask for. restic calibrates its keys
/// to at most 60 MiB of memory (N·r·128 bytes) and half a second; these caps
/// (4 times that memory, p up to 16) leave room for tuned restic builds while refusing a crafted key file that
/// would make opening the repository allocate terabytes or run for days. No
/// password is needed to plant such a file, so the check comes before scrypt.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
const MAX_SCRYPT_P: u32 = 16;
const MAX_SCRYPT_WORK: u64 = 1 << 32;

fn check_scrypt_cost(n: u64, r: u32, p: u32) -> Result<u8> {
    let refuse = |why: String| {
        RepoError::Corrupt(format!(
            "a key file asks for scrypt N = {n}, r = {r}, p = {p}: {why}. restic never writes such a key; remove that file from keys/ if it is not yours"
        ))
    };
    if !n.is_power_of_two() || n < 2 {
        return Err(refuse("N must be a power of two above 1".into()));
    }
    if r == 0 || p == 0 || p > MAX_SCRYPT_P {
        return Err(refuse(format!(
            "r and p must be between 1 and {MAX_SCRYPT_P}"
        )));
    }
    let memory = n.checked_mul(u64::from(r)).and_then(|x| x.checked_mul(128));
    if memory.is_none_or(|m| m > MAX_SCRYPT_MEMORY) {
        return Err(refuse(format!(
            "that needs more than {} MiB of memory",
            MAX_SCRYPT_MEMORY >> 20
        )));
    }
    let work = memory.and_then(|m| m.checked_mul(u64::from(p)));
    if work.is_none_or(|w| w > MAX_SCRYPT_WORK) {
        return Err(refuse("that would take far too long".into()));
    }
    Ok(n.trailing_zeros() as u8)
}

fn user_key(password: &str, salt: &[u8], n: u64, r: u32, p: u32) -> Result<Key> {
    let log_n = check_scrypt_cost(n, r, p)?;
    let params = scrypt::Params::new(log_n, r, p, 64)
        .map_err(|e| RepoError::Corrupt(format!("key file has invalid scrypt parameters: {e}")))?;
    let mut out = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
        .map_err(|e| RepoError::Corrupt(format!("scrypt failed: {e}")))?;
    Ok(Key::from_bytes(&out))
}

impl KeyFile {
    /// Wraps `master` for `password` with restic's default scrypt cost (N=2^15, r=8, p=1).
    pub fn new(
        master: &Key,
        password: &str,
        hostname: &str,
        username: &str,
        created: &str,
    ) -> Result<KeyFile> {
        let mut salt = [0u8; 64];
        random_bytes(&mut salt);
        let (n, r, p) = (1u64 << 15, 8, 1);
        let user = user_key(password, &salt, n, r, p)?;
        let json = MasterKeyJson {
            mac: MacJson {
                k: B64.encode(master.mac_k),
                r: B64.encode(master.mac_r),
            },
            encrypt: B64.encode(master.encrypt),
        };
        let plain = serde_json::to_vec(&json).expect("serializable");
        Ok(KeyFile {
            created: created.to_string(),
            username: username.to_string(),
            hostname: hostname.to_string(),
            kdf: "scrypt".into(),
            n,
            r,
            p,
            salt: B64.encode(salt),
            data: B64.encode(user.encrypt(&plain)),
        })
    }

    /// The master key if `password` opens this key file, `Ok(None)` if it does not.
    pub fn open(&self, password: &str) -> Result<Option<Key>> {
        if self.kdf != "scrypt" {
            return Err(RepoError::Corrupt(format!(
                "unsupported key derivation {:?}",
                self.kdf
            )));
        }
        let bad = |what: &str| RepoError::Corrupt(format!("key file has an invalid {what}"));
        let salt = B64.decode(&self.salt).map_err(|_| bad("salt"))?;
        let data = B64.decode(&self.data).map_err(|_| bad("data field"))?;
        let user = user_key(password, &salt, self.n, self.r, self.p)?;
        let Some(plain) = user.decrypt(&data) else {
            return Ok(None);
        };
        let json: MasterKeyJson = serde_json::from_slice(&plain).map_err(|_| bad("master key"))?;
        let mut b = [0u8; 64];
        let enc = B64.decode(&json.encrypt).map_err(|_| bad("master key"))?;
        let k = B64.decode(&json.mac.k).map_err(|_| bad("master key"))?;
        let r = B64.decode(&json.mac.r).map_err(|_| bad("master key"))?;
        if enc.len() != 32 || k.len() != 16 || r.len() != 16 {
            return Err(bad("master key length"));
        }
        b[..32].copy_from_slice(&enc);
        b[32..48].copy_from_slice(&k);
        b[48..].copy_from_slice(&r);
        Ok(Some(Key::from_bytes(&b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = Key::random();
        let c = k.encrypt(b"hello world");
        assert_eq!(c.len(), 11 + OVERHEAD);
        assert_eq!(k.decrypt(&c).unwrap(), b"hello world");
        let mut bad = c.clone();
        bad[20] ^= 1;
        assert!(k.decrypt(&bad).is_none());
        assert!(Key::random().decrypt(&c).is_none());
    }
}
