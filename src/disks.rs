//! Disk selection shared by both distributions: the inventory's
//! [`DiskSelector`] matched against the disks a node reports (Talos's
//! `Disks.block.talos.dev` resources in maintenance mode, `lsblk` over SSH on
//! k3s). The rules follow Talos's own install-disk selector
//! (`pkg/machinery/config/types/v1alpha1/v1alpha1_provider.go`,
//! `InstallConfig.DiskMatchExpression`): `model`, `serial` and `wwid` are glob
//! patterns (`glob(pattern, disk.model)`), read-only disks and CD-ROMs are
//! never candidates. Where Talos can express one size comparison only, the
//! inventory's `size` is a whole range (`400GB-2TB`: both bounds hold), and
//! where Talos installs on the first of several matches
//! (`matchedDisks[0]` in the install sequence), we insist on exactly one.

use std::fmt;

use crate::inventory::DiskSelector;

/// A whole disk as a node reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// `/dev/<name>`.
    pub dev_path: String,
    /// Bytes.
    pub size: u64,
    pub model: String,
    pub serial: String,
    pub wwid: String,
    /// `nvme`, `sata`, `virtio`, `usb`... (empty for loop and DM devices).
    pub transport: String,
    pub rotational: bool,
    pub readonly: bool,
    pub cdrom: bool,
    /// Whether the source counts it as an installable whole disk at all
    /// (Talos: a transport, not read-only, not a CD-ROM; lsblk: TYPE=disk,
    /// not read-only).
    pub eligible: bool,
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.dev_path, pretty_size(self.size))?;
        for (k, v) in [
            ("model", &self.model),
            ("serial", &self.serial),
            ("wwid", &self.wwid),
            ("transport", &self.transport),
        ] {
            if !v.is_empty() {
                write!(f, ", {k} {v:?}")?;
            }
        }
        if self.readonly {
            f.write_str(", read-only")?;
        }
        if self.cdrom {
            f.write_str(", cdrom")?;
        }
        f.write_str(")")
    }
}

/// SI text of a size, like Talos's `pretty_size` (`2.0 TB`, `512 GB`).
pub fn pretty_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "kB"),
    ];
    for (n, u) in UNITS {
        if bytes >= *n {
            let v = bytes as f64 / *n as f64;
            return if v >= 100.0 {
                format!("{v:.0} {u}")
            } else {
                format!("{v:.1} {u}")
            };
        }
    }
    format!("{bytes} B")
}

/// Go's `filepath.Match` (the `glob` of Talos's CEL environment): `*` any run
/// of characters except `/`, `?` one such character, `[...]` a class
/// (`[^...]` or `[!...]` negated, ranges `a-z`), `\` escapes. A malformed
/// pattern matches nothing.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t).unwrap_or(false)
}

fn glob_at(p: &[char], t: &[char]) -> Option<bool> {
    let (mut pi, mut ti) = (0, 0);
    // Backtracking point: the pattern index after the last `*` and the text index it stands at.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                c => {
                    if ti < t.len() {
                        let (ok, next) = match c {
                            '?' => (t[ti] != '/', pi + 1),
                            '[' => class(p, pi, t[ti])?,
                            '\\' => {
                                let e = *p.get(pi + 1)?;
                                (t[ti] == e, pi + 2)
                            }
                            c => (t[ti] == c, pi + 1),
                        };
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    }
                }
            }
        } else if ti == t.len() {
            return Some(true);
        }
        // Mismatch: let the last `*` swallow one more character (never a `/`).
        match star {
            Some((sp, st)) if st < t.len() && t[st] != '/' => {
                star = Some((sp, st + 1));
                pi = sp;
                ti = st + 1;
            }
            _ => {
                // A malformed rest of the pattern is still an error in Go.
                return if well_formed(&p[pi.min(p.len())..]) {
                    Some(false)
                } else {
                    None
                };
            }
        }
    }
}

/// Matches `c` against the class starting at `p[start] == '['`: (matched, index after `]`).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(p.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negated && c != '/', i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|n| *n != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

fn well_formed(p: &[char]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 >= p.len() => return false,
            '\\' => i += 2,
            '[' => match class(p, i, '\0') {
                Some((_, next)) => i = next,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// A WWID/WWN without the notation prefix, lower case: Talos reports
/// `naa.5000c500a1b2c3d4` where lsblk reports `0x5000c500a1b2c3d4`.
fn norm_id(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    ["0x", "naa.", "eui.", "wwn-0x"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .map(str::to_owned)
        .unwrap_or(s)
}

/// True when `disk` satisfies every field `sel` gives (eligibility aside).
pub fn matches(sel: &DiskSelector, disk: &Disk) -> bool {
    sel.path.as_ref().is_none_or(|p| disk.dev_path == p.trim())
        && sel.serial.as_ref().is_none_or(|s| glob(s.trim(), disk.serial.trim()))
        && sel
            .wwid
            .as_ref()
            .is_none_or(|w| glob(&norm_id(w), &norm_id(&disk.wwid)))
        && sel.model.as_ref().is_none_or(|m| glob(m.trim(), disk.model.trim()))
        && sel.size.is_none_or(|r| r.contains(disk.size))
}

/// Why a selector does not pick exactly one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No eligible disk matches.
    None,
    /// Several eligible disks match (their paths).
    Many(Vec<String>),
}

/// The one eligible disk among `disks` that `sel` selects.
pub fn select<'d>(sel: &DiskSelector, disks: &'d [Disk]) -> Result<&'d Disk, Selection> {
    let found: Vec<&Disk> = disks.iter().filter(|d| d.eligible && matches(sel, d)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Selection::None),
        many => Err(Selection::Many(many.iter().map(|d| d.dev_path.clone()).collect())),
    }
}

/// A selector as the operator wrote it: `model "Samsung SSD 980*", size 400 GB-2.0 TB`.
pub fn describe(sel: &DiskSelector) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("path", &sel.path),
        ("serial", &sel.serial),
        ("wwid", &sel.wwid),
        ("model", &sel.model),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k} {v:?}"));
        }
    }
    if let Some(r) = sel.size {
        let size = match (r.min, r.max) {
            (Some(a), Some(b)) if a == b => pretty_size(a),
            (Some(a), Some(b)) => format!("{}-{}", pretty_size(a), pretty_size(b)),
            (Some(a), None) => format!(">= {}", pretty_size(a)),
            (None, Some(b)) => format!("<= {}", pretty_size(b)),
            (None, None) => "any".into(),
        };
        parts.push(format!("size {size}"));
    }
    parts.join(", ")
}

/// [`select`], with the refusal an operator can act on: which selector
/// (`what`, e.g. "install disk"), and every disk the node reported.
pub fn select_or_explain<'d>(what: &str, sel: &DiskSelector, disks: &'d [Disk]) -> Result<&'d Disk, String> {
    select(sel, disks).map_err(|why| {
        let listed = if disks.is_empty() {
            "none".to_owned()
        } else {
            disks.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        };
        match why {
            Selection::None => format!(
                "no disk matches the {what} selector ({}); the node's disks: {listed}",
                describe(sel)
            ),
            Selection::Many(paths) => format!(
                "the {what} selector ({}) matches {} disks ({}): make it select one; the node's disks: {listed}",
                describe(sel),
                paths.len(),
                paths.join(", ")
            ),
        }
    })
}

/// A CEL string literal.
fn cel_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The selector as a CEL expression in Talos's disk environment, for a user
/// volume's `provisioning.diskSelector.match`: the same rules as [`select`]
/// (globs on model, serial and wwid, both size bounds, only writable
/// non-CD-ROM disks with a transport), never the system disk.
pub fn cel_match(sel: &DiskSelector) -> String {
    let mut terms = Vec::new();
    if let Some(p) = &sel.path {
        terms.push(format!("disk.dev_path == {}", cel_string(p.trim())));
    }
    for (field, v) in [("model", &sel.model), ("serial", &sel.serial), ("wwid", &sel.wwid)] {
        if let Some(v) = v {
            terms.push(format!("glob({}, disk.{field})", cel_string(v.trim())));
        }
    }
    if let Some(r) = sel.size {
        if let Some(min) = r.min {
            terms.push(format!("disk.size >= {min}u"));
        }
        if let Some(max) = r.max {
            terms.push(format!("disk.size <= {max}u"));
        }
    }
    terms.extend(
        [
            r#"disk.transport != """#,
            "!disk.readonly",
            "!disk.cdrom",
            "!system_disk",
        ]
        .map(str::to_owned),
    );
    terms.join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SizeRange;

    fn disk(path: &str, model: &str, serial: &str, size: u64) -> Disk {
        Disk {
            dev_path: path.into(),
            size,
            model: model.into(),
            serial: serial.into(),
            transport: "nvme".into(),
            eligible: true,
            ..Disk::default()
        }
    }

    fn sel(model: Option<&str>, size: Option<&str>) -> DiskSelector {
        DiskSelector {
            model: model.map(Into::into),
            size: size.map(|s| s.parse::<SizeRange>().unwrap()),
            ..DiskSelector::default()
        }
    }

    #[test]
    fn glob_follows_go_filepath_match() {
        assert!(glob("Samsung SSD 980*", "Samsung SSD 980 PRO 1TB"));
        assert!(glob("Samsung SSD 980*", "Samsung SSD 980"));
        assert!(!glob("Samsung SSD 980*", "Samsung SSD 970 EVO"));
        assert!(glob("S?D", "SSD"));
        assert!(glob("*QEMU*", "QEMU HARDDISK"));
        assert!(glob("[A-C]x", "Bx") && !glob("[^A-C]x", "Bx") && glob("[!A-C]x", "Dx"));
        assert!(glob("a\\*", "a*") && !glob("a\\*", "ab"));
        assert!(!glob("a*", "a/b"), "`*` does not cross a separator");
        assert!(!glob("samsung*", "Samsung SSD"), "case-sensitive, as Talos");
        assert!(!glob("[a-", "a"), "a malformed pattern matches nothing");
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(glob("*", "") && !glob("?", ""));
    }

    #[test]
    fn both_bounds_of_a_size_range_hold() {
        let disks = [
            disk("/dev/nvme0n1", "Samsung SSD 980 PRO 1TB", "S1", 1_000_204_886_016),
            disk("/dev/nvme1n1", "Samsung SSD 980 PRO 4TB", "S2", 4_000_787_030_016),
        ];
        let picked = select(&sel(Some("Samsung SSD 980*"), Some("400GB-2TB")), &disks).unwrap();
        assert_eq!(
            picked.dev_path, "/dev/nvme0n1",
            "the 4 TB disk is above the upper bound"
        );
        assert_eq!(
            select(&sel(None, Some("2TB-3TB")), &disks),
            Err(Selection::None),
            "between the two disks"
        );
    }

    #[test]
    fn an_ambiguous_selector_is_refused_with_the_disks_listed() {
        let disks = [
            disk("/dev/nvme0n1", "Samsung SSD 980 1TB", "S1", 1_000_204_886_016),
            disk("/dev/nvme1n1", "Samsung SSD 980 1TB", "S2", 1_000_204_886_016),
        ];
        let e = select_or_explain("install disk", &sel(Some("Samsung SSD 980*"), None), &disks).unwrap_err();
        assert!(e.contains("matches 2 disks (/dev/nvme0n1, /dev/nvme1n1)"), "{e}");
        assert!(e.contains("serial \"S2\""), "{e}");
        let one = DiskSelector {
            serial: Some("S2".into()),
            ..sel(Some("Samsung SSD 980*"), None)
        };
        assert_eq!(select(&one, &disks).unwrap().dev_path, "/dev/nvme1n1");
    }

    #[test]
    fn read_only_disks_and_cdroms_are_never_selected() {
        let mut cd = disk("/dev/sr0", "QEMU DVD-ROM", "", 1_000_000_000);
        cd.cdrom = true;
        cd.eligible = false;
        let e = select_or_explain("install disk", &sel(Some("QEMU*"), None), &[cd]).unwrap_err();
        assert!(
            e.contains("no disk matches") && e.contains("/dev/sr0") && e.contains("cdrom"),
            "{e}"
        );
    }

    #[test]
    fn a_selector_becomes_a_cel_match_with_both_bounds() {
        let s = DiskSelector {
            serial: Some("S5GX*".into()),
            ..sel(Some("Samsung SSD 980*"), Some("400GB-2TB"))
        };
        assert_eq!(
            cel_match(&s),
            r#"glob("Samsung SSD 980*", disk.model) && glob("S5GX*", disk.serial) && disk.size >= 400000000000u && disk.size <= 2000000000000u && disk.transport != "" && !disk.readonly && !disk.cdrom && !system_disk"#
        );
    }

    #[test]
    fn wwids_compare_without_their_notation_prefix() {
        let mut d = disk("/dev/sda", "X", "", 1);
        d.wwid = "naa.5000c500a1b2c3d4".into();
        let s = DiskSelector {
            wwid: Some("0x5000C500A1B2C3D4".into()),
            ..DiskSelector::default()
        };
        assert!(matches(&s, &d));
    }
}
