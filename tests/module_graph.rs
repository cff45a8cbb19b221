//! The module boundaries ARCHITECTURE.md promises, held by a test: the files
//! of `src/` import each other without a cycle, and the planning types
//! depend on no transport.
//!
//! A module and its own submodules count as one unit: a `mod.rs` that
//! re-exports its parts and parts that use their parent's shared types
//! are no cycle; two siblings, or two top-level modules, that need each
//! other are.
//!
//! Edges come from paths in the code (`crate::a::b`, `super::x`, `self::x`
//! and a module's own children by name), each resolved to the deepest file
//! that defines the module; unit-test modules at the end of a file are left
//! out (they see their parent through `super::*`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module file of `src/` (but `main.rs`) and its source up to its tests.
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || (prefix.is_empty() && name == "main") {
                continue;
            }
            if name != "mod" && name != "lib" {
                module.push(name);
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Comments (doc links included) are no dependency.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            out.insert(module, code);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

/// Paths the code names, as segments: `crate::a::{b, c::d}` gives
/// `[crate, a, b]` and `[crate, a, c, d]`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        if !(boundary && is_ident(chars[i])) {
            i += 1;
            continue;
        }
        let (path, end) = read_path(&chars, i);
        out.extend(path_group(&chars, end, &path));
        if path.len() > 1 {
            out.push(path);
        }
        i = end.max(i + 1);
    }
    out
}

/// Reads `a::b::c` from `i`; returns the segments and where it stopped.
fn read_path(chars: &[char], mut i: usize) -> (Vec<String>, usize) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut segs = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if start == i {
            break;
        }
        segs.push(chars[start..i].iter().collect());
        if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
            i += 2;
        } else {
            break;
        }
    }
    (segs, i)
}

/// The items of a `{ ... }` group right after `prefix::`, prefixed.
fn path_group(chars: &[char], at: usize, prefix: &[String]) -> Vec<Vec<String>> {
    if chars.get(at) != Some(&'{') || at < 2 || chars[at - 2..at] != [':', ':'] {
        return Vec::new();
    }
    let (mut depth, mut i, mut item_start) = (0, at, at + 1);
    let mut out = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item: String = chars[item_start..i].iter().collect();
                let inner: Vec<char> = item.trim().chars().collect();
                if !inner.is_empty() {
                    let (segs, end) = read_path(&inner, 0);
                    let mut full = prefix.to_vec();
                    full.extend(segs.iter().filter(|s| *s != "self").cloned());
                    out.extend(path_group(&inner, end, &full));
                    out.push(full);
                }
                item_start = i + 1;
                if chars[i] == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    out
}

/// The module file a path in `from` refers to, when it is another file.
fn resolve(from: &Module, path: &[String], known: &BTreeMap<Module, String>) -> Option<Module> {
    let (base, rest): (Module, &[String]) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => (from.clone(), path),
    };
    let mut best = None;
    let mut m = base.clone();
    for seg in rest {
        m.push(seg.clone());
        if known.contains_key(&m) {
            best = Some(m.clone());
        } else {
            break;
        }
    }
    // `crate::x` with `x` an item of lib.rs, or `super::Item` in a parent file.
    let target = best.or_else(|| (path[0] != "crate" || !rest.is_empty()).then_some(base))?;
    (target != *from && known.contains_key(&target)).then_some(target)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules();
    known
        .iter()
        .map(|(m, code)| {
            let deps = paths(code)
                .iter()
                .filter(|p| matches!(p[0].as_str(), "crate" | "super" | "self") || known.contains_key(&child(m, &p[0])))
                .filter_map(|p| resolve(m, p, &known))
                // A module and its own submodules are one unit (a facade and its parts).
                .filter(|d| !d.starts_with(m) && !m.starts_with(d))
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

fn child(m: &Module, name: &str) -> Module {
    let mut c = m.clone();
    c.push(name.to_owned());
    c
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(name(w));
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    let g = graph();
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles in src/ (each line: modules that reach each other):\n{}",
        found
            .iter()
            .map(|c| format!("  {}", c.join(" <-> ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn planning_types_depend_on_no_transport() {
    let g = graph();
    let transports = ["ssh", "talos", "k8s", "redfish"];
    let planners = [
        &["engine", "step"][..],
        &["engine", "slots"],
        &["phases", "k3s_nodes", "plan"],
    ];
    for module in planners {
        let m: Module = module.iter().map(|s| s.to_string()).collect();
        let deps = &g[&m];
        let bad: Vec<String> = deps
            .iter()
            .filter(|d| transports.contains(&d[0].as_str()))
            .map(name)
            .collect();
        assert!(bad.is_empty(), "{} reaches transports: {bad:?}", name(&m));
    }
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let m = |s: &str| vec![s.to_owned()];
    g.insert(m("a"), [m("b")].into());
    g.insert(m("b"), [m("c")].into());
    g.insert(m("c"), [m("a")].into());
    g.insert(m("d"), [m("a")].into());
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
    let known: BTreeMap<Module, String> = [
        (vec![], String::new()),
        (m("phases"), String::new()),
        (vec!["phases".into(), "crds".into()], String::new()),
    ]
    .into();
    let from = vec!["phases".to_owned(), "crds".to_owned()];
    let ps = paths("use super::{ClusterRun, objects};\nuse crate::phases::{self, crds::X};");
    let resolved: BTreeSet<Module> = ps.iter().filter_map(|p| resolve(&from, p, &known)).collect();
    assert_eq!(
        resolved,
        [m("phases")].into(),
        "super:: items resolve to the parent file"
    );
}
