//! Unpacking the Kubeconfig RPC payload: a gzip-compressed tar archive with a
//! single entry `kubeconfig`, possibly without end-of-archive blocks.

use std::io::Read;

/// Extracts the `kubeconfig` entry. A truncated archive (no end-of-archive
/// blocks) is fine as long as the entry itself is complete.
pub fn unpack_kubeconfig(archive: &[u8]) -> Result<Vec<u8>, String> {
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut tar_bytes)
        .map_err(|e| format!("kubeconfig payload is not gzip: {e}"))?;
    // The tar crate treats EOF where a header would start as the end of the
    // archive, so missing end-of-archive blocks need no special handling.
    let mut tar = tar::Archive::new(tar_bytes.as_slice());
    let entries = tar
        .entries()
        .map_err(|e| format!("kubeconfig payload is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("kubeconfig archive is corrupt: {e}"))?;
        let is_kubeconfig = entry
            .path()
            .map(|p| p.as_os_str() == "kubeconfig" || p.as_os_str() == "./kubeconfig")
            .unwrap_or(false);
        if is_kubeconfig {
            let mut out = Vec::new();
            entry
                .read_to_end(&mut out)
                .map_err(|e| format!("kubeconfig entry is truncated: {e}"))?;
            let expected = entry.header().size().unwrap_or(0);
            if out.len() as u64 != expected {
                return Err(format!(
                    "kubeconfig entry is truncated: {} of {expected} bytes",
                    out.len()
                ));
            }
            return Ok(out);
        }
    }
    Err("the archive has no `kubeconfig` entry".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(with_end: bool) -> Vec<u8> {
        let body = b"apiVersion: v1\nkind: Config\n";
        let mut header = tar::Header::new_gnu();
        header.set_path("kubeconfig").unwrap();
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend_from_slice(body);
        tar.resize(512 + 512, 0);
        if with_end {
            tar.extend_from_slice(&[0u8; 1024]);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn unpacks_with_and_without_end_of_archive() {
        for with_end in [true, false] {
            let out = unpack_kubeconfig(&archive(with_end)).unwrap();
            assert_eq!(out, b"apiVersion: v1\nkind: Config\n");
        }
    }

    #[test]
    fn rejects_payloads_that_are_not_gzip_or_miss_the_entry() {
        assert!(unpack_kubeconfig(b"not gzip").unwrap_err().contains("gzip"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[0u8; 1024]).unwrap();
        assert!(
            unpack_kubeconfig(&gz.finish().unwrap())
                .unwrap_err()
                .contains("no `kubeconfig`")
        );
    }
}
