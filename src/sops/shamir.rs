//! Rebuilding a data key split across several key groups: Shamir secret
//! sharing over GF(2^8) as getsops/sops `shamir/shamir.go` (from HashiCorp
//! Vault) does it. Each part is the share bytes followed by its x coordinate.

/// Interpolates every byte at x = 0 from `parts` (at least two, same length,
/// distinct x coordinates).
pub fn combine(parts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    if parts.len() < 2 {
        return Err("less than two parts cannot rebuild the secret".into());
    }
    let len = parts[0].len();
    if len < 2 || parts.iter().any(|p| p.len() != len) {
        return Err("parts differ in length or are too short".into());
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    if (1..xs.len()).any(|i| xs[..i].contains(&xs[i])) {
        return Err("duplicate part".into());
    }
    Ok((0..len - 1)
        .map(|idx| {
            let ys: Vec<u8> = parts.iter().map(|p| p[idx]).collect();
            interpolate_at_zero(&xs, &ys)
        })
        .collect())
}

fn interpolate_at_zero(xs: &[u8], ys: &[u8]) -> u8 {
    let mut result = 0;
    for i in 0..xs.len() {
        let mut basis = 1;
        for j in 0..xs.len() {
            if i != j {
                // (0 - x_j) / (x_i - x_j); subtraction is XOR in GF(2^8).
                basis = mult(basis, mult(xs[j], inverse(xs[i] ^ xs[j])));
            }
        }
        result ^= mult(ys[i], basis);
    }
    result
}

/// a^254 = a^-1 in GF(2^8).
fn inverse(a: u8) -> u8 {
    let mut out = 1;
    for _ in 0..254 {
        out = mult(out, a);
    }
    out
}

/// Multiplication modulo x^8 + x^4 + x^3 + x + 1 (0x11b), as `shamir.go` mult.
fn mult(a: u8, b: u8) -> u8 {
    let mut acc: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let carry = if acc & 0x80 != 0 { 0x1b } else { 0 };
        acc = (acc << 1) ^ carry ^ if bit == 1 { a } else { 0 };
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_arithmetic() {
        assert_eq!(mult(0x57, 0x83), 0xc1, "FIPS-197 section 4.2 example");
        for a in 1..=255u8 {
            assert_eq!(mult(a, inverse(a)), 1);
        }
    }

    #[test]
    fn refuses_unusable_parts() {
        // A degree-0 polynomial: every share holds the secret itself.
        let parts = vec![vec![42, 7, 1], vec![42, 7, 2]];
        assert_eq!(combine(&parts).unwrap(), [42, 7]);
        assert!(combine(&parts[..1]).is_err(), "one part");
        assert!(combine(&[parts[0].clone(), parts[0].clone()]).is_err(), "duplicate x");
        assert!(combine(&[parts[0].clone(), vec![1, 2]]).is_err(), "lengths differ");
    }
}
