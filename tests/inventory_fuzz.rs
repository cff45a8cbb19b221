//! Property tests: no input, however mangled, makes the loader panic, and
//! every failure carries at least one located or path-named error.

use std::path::Path;

use bootstrap::inventory;
use proptest::prelude::*;

fn examples() -> Vec<String> {
    ["prod-talos.toml", "homelab-k3s.toml", "simulated.toml", "rack-k3s.toml"]
        .iter()
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory").join(f)).unwrap())
        .collect()
}

fn check(text: &str) {
    match inventory::load_str(text, Path::new("fuzz.toml")) {
        Ok(_) => {}
        Err(d) => {
            assert!(d.errors() > 0, "an Err carries at least one error");
            for diag in &d.0 {
                assert!(!diag.message.is_empty());
            }
        }
    }
}

/// One edit of an inventory: delete, duplicate, swap or replace lines, or
/// splice random text into a line.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Splice(usize, usize, String),
    ReplaceValue(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        "[ -~]{0,12}",
        Just("\"".to_owned()),
        Just("[[".to_owned()),
        Just("= {".to_owned()),
        Just("\u{feff}é\u{0}".to_owned()),
        "[0-9./:a-f-]{1,20}",
    ];
    let value = prop_oneof![
        Just("\"\"".to_owned()),
        Just("\"10.0.0.0/33\"".to_owned()),
        Just("\"::1\"".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("true".to_owned()),
        "\"[0-9a-f.:/-]{0,24}\"",
        "\"[a-zA-Z0-9_ -]{0,70}\"",
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        (any::<usize>(), any::<usize>(), junk).prop_map(|(a, b, s)| Edit::Splice(a, b, s)),
        (any::<usize>(), value).prop_map(|(a, v)| Edit::ReplaceValue(a, v)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::Delete(i) => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Swap(a, b) => lines.swap(a % n, b % n),
            Edit::Splice(i, at, s) => {
                let l = &mut lines[i % n];
                let mut pos = at % (l.len() + 1);
                while !l.is_char_boundary(pos) {
                    pos -= 1;
                }
                l.insert_str(pos, s);
            }
            Edit::ReplaceValue(i, v) => {
                let l = &mut lines[i % n];
                if let Some(eq) = l.find(" = ") {
                    l.truncate(eq + 3);
                    l.push_str(v);
                }
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn mutated_examples_never_panic(which in 0usize..4, edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(&examples()[which], &edits);
        check(&text);
    }
}
