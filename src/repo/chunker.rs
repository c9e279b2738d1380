//! Content-defined chunking with restic's Rabin fingerprint chunker: same
//! polynomial arithmetic, window (64 bytes), sizes (512 KiB .. 8 MiB, 1 MiB on
//! average), so identical data cuts at the same places as in restic.

use std::io::{self, Read};

const WINDOW: usize = 64;
pub const MIN_SIZE: usize = 512 * 1024;
pub const MAX_SIZE: usize = 8 * 1024 * 1024;
const SPLIT_MASK: u64 = (1 << 20) - 1;
const BUF_SIZE: usize = 512 * 1024;

fn deg(p: u64) -> i32 {
    63 - p.leading_zeros() as i32
}

fn pmod(mut x: u64, m: u64) -> u64 {
    let dm = deg(m);
    while deg(x) >= dm {
        x ^= m << (deg(x) - dm);
    }
    x
}

fn mulmod(x: u64, f: u64, g: u64) -> u64 {
    if x == 0 || f == 0 {
        return 0;
    }
    let mut res = 0u64;
    let mut a = pmod(x, g);
    for i in 0..=deg(f) {
        if f & (1 << i) != 0 {
            res = pmod(res ^ a, g);
        }
        a = pmod(a << 1, g);
    }
    res
}

fn gcd(mut x: u64, mut f: u64) -> u64 {
    loop {
        if f == 0 {
            return x;
        }
        if x == 0 {
            return f;
        }
        if deg(x) < deg(f) {
            std::mem::swap(&mut x, &mut f);
        }
        let r = pmod(x, f);
        x = f;
        f = r;
    }
}

/// x^(2^p) - x mod g
fn qp(p: i32, g: u64) -> u64 {
    let mut res = 2u64;
    for _ in 0..p {
        res = mulmod(res, res, g);
    }
    pmod(res ^ 2, g)
}

/// Ben-Or's irreducibility test.
pub fn irreducible(p: u64) -> bool {
    (1..=deg(p) / 2).all(|i| gcd(p, qp(i, p)) == 1)
}

/// A random irreducible polynomial of degree 53, as restic's `RandomPolynomial`.
pub fn random_polynomial() -> u64 {
    loop {
        let mut b = [0u8; 8];
        super::crypto::random_bytes(&mut b);
        let p = (u64::from_le_bytes(b) & ((1 << 54) - 1)) | (1 << 53) | 1;
        if irreducible(p) {
            return p;
        }
    }
}

/// The lookup tables of one polynomial.
pub struct Tables {
    out: [u64; 256],
    modt: [u64; 256],
    shift: u32,
}

impl Tables {
    pub fn new(pol: u64) -> Tables {
        let mut out = [0u64; 256];
        let mut modt = [0u64; 256];
        let k = deg(pol);
        for b in 0..256u64 {
            let mut h = pmod(b, pol);
            for _ in 0..WINDOW - 1 {
                h = pmod(h << 8, pol);
            }
            out[b as usize] = h;
            modt[b as usize] = pmod(b << k, pol) | (b << k);
        }
        Tables {
            out,
            modt,
            shift: (k - 8) as u32,
        }
    }
}

/// Splits a reader into chunks.
pub struct Chunker<'t, R> {
    rd: R,
    t: &'t Tables,
    buf: Vec<u8>,
    bpos: usize,
    bmax: usize,
    eof: bool,
}

impl<'t, R: Read> Chunker<'t, R> {
    pub fn new(rd: R, t: &'t Tables) -> Self {
        Chunker {
            rd,
            t,
            buf: vec![0; BUF_SIZE],
            bpos: 0,
            bmax: 0,
            eof: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut n = 0;
        while n < self.buf.len() {
            match self.rd.read(&mut self.buf[n..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.bpos = 0;
        self.bmax = n;
        Ok(())
    }

    /// Reads the next chunk into `data` (cleared first). `Ok(false)` at the end.
    pub fn next_chunk(&mut self, data: &mut Vec<u8>) -> io::Result<bool> {
        data.clear();
        let t = self.t;
        let mut win = [0u8; WINDOW];
        let mut wpos = 0usize;
        // restic's reset(): slide in a single 1 byte
        win[0] = 1;
        wpos = (wpos + 1) % WINDOW;
        let mut digest: u64 = 1; // updateDigest(0, 1) = 1
        let mut pre = MIN_SIZE - WINDOW;
        let mut count = 0usize;
        loop {
            if self.bpos >= self.bmax {
                if self.eof {
                    return Ok(!data.is_empty());
                }
                self.fill()?;
                if self.bmax == 0 {
                    return Ok(!data.is_empty());
                }
            }
            if pre > 0 {
                let n = (self.bmax - self.bpos).min(pre);
                data.extend_from_slice(&self.buf[self.bpos..self.bpos + n]);
                self.bpos += n;
                count += n;
                pre -= n;
                continue;
            }
            let start = self.bpos;
            let mut add = count;
            for i in start..self.bmax {
                let b = self.buf[i];
                let out = win[wpos];
                win[wpos] = b;
                digest ^= t.out[out as usize];
                wpos = (wpos + 1) % WINDOW;
                let index = (digest >> t.shift) as u8;
                digest = (digest << 8) | u64::from(b);
                digest ^= t.modt[index as usize];
                add += 1;
                if add < MIN_SIZE {
                    continue;
                }
                if digest & SPLIT_MASK == 0 || add >= MAX_SIZE {
                    data.extend_from_slice(&self.buf[start..=i]);
                    self.bpos = i + 1;
                    return Ok(true);
                }
            }
            data.extend_from_slice(&self.buf[start..self.bmax]);
            count = add;
            self.bpos = self.bmax;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restics_default_polynomial_is_irreducible() {
        // the polynomial restic's chunker tests use
        assert!(irreducible(0x3DA3358B4DC173));
        assert!(!irreducible(0x3DA3358B4DC173 ^ 0x2));
        let p = random_polynomial();
        assert_eq!(deg(p), 53);
    }

    #[test]
    fn chunks_cover_input_and_respect_bounds() {
        let mut data = vec![0u8; 20 * 1024 * 1024];
        let mut x: u64 = 1;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let t = Tables::new(0x3DA3358B4DC173);
        let mut c = Chunker::new(&data[..], &t);
        let mut chunk = Vec::new();
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        while c.next_chunk(&mut chunk).unwrap() {
            sizes.push(chunk.len());
            all.extend_from_slice(&chunk);
        }
        assert_eq!(all, data);
        assert!(sizes.len() > 5, "{sizes:?}");
        for s in &sizes[..sizes.len() - 1] {
            assert!(*s >= MIN_SIZE && *s <= MAX_SIZE);
        }
    }
}
