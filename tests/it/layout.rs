//! The crate's dependencies run one way (issue 11): read from `src/` as written, every
//! `crate::<module>` a top-level module names is an edge, and the graph has no cycle; domain
//! modules never name the HTTP layer or the wiring.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Modules that serve or wire: nothing below them may name them.
const OUTER: &[&str] = &["api", "config", "server", "cli", "dev"];

/// Domain modules: they import nothing from [`OUTER`].
const DOMAIN: &[&str] = &[
    "amount",
    "secret",
    "chain",
    "chains",
    "store",
    "indexer",
    "pipeline",
    "pricing",
    "webhooks",
    "keeper",
    "observability",
    "supervisor",
    "views",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` without comments (doc links name modules without depending on them) and
/// without string literals.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_string && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The top-level modules `code` names: `crate::x`, and every first segment inside
/// `crate::{a, b::c, d::{e, f}}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        // `crate::` must not be the tail of a longer path segment (`my_crate::`).
        if at > "crate::".len() {
            let before = bytes[start - "crate::".len() - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        if bytes.get(start) == Some(&b'{') {
            // Only the first segment of each item at the group's own depth.
            let mut depth = 0;
            let mut item_start = true;
            let mut ident = String::new();
            for &b in &bytes[start..] {
                let in_ident = b.is_ascii_alphanumeric() || b == b'_';
                if depth == 1 && item_start {
                    if in_ident {
                        ident.push(b as char);
                        continue;
                    }
                    if !ident.is_empty() {
                        found.insert(std::mem::take(&mut ident));
                        item_start = false;
                    }
                }
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => item_start = true,
                    _ => {}
                }
            }
        } else {
            let ident: String = code[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !ident.is_empty() {
                found.insert(ident);
            }
        }
    }
    found
}

/// `module -> modules it names`, over the library's top-level modules (the `src/bin` tools and
/// `main.rs` are outside the library).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let names = graph.entry(module.clone()).or_default();
        for named in named_modules(&code) {
            if named != module
                && named != "self"
                && named != "super"
                && named.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                names.insert(named);
            }
        }
    }
    graph
}

/// A cycle through `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_reader_sees_imports_in_paths_and_groups_but_not_in_comments_or_strings() {
    let code = code_of(
        "use crate::{a::{x, y}, b, c::z};\nlet v = crate::d::f();\n// crate::e\nlet s = \"crate::g\";\nuse my_crate::h;",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let mut cyclic = BTreeMap::new();
    cyclic.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    cyclic.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&cyclic), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
}

#[test]
fn src_has_no_import_cycle_between_its_top_level_modules() {
    let graph = graph();
    assert!(graph.len() > 10, "read the crate's modules: {graph:?}");
    assert_eq!(find_cycle(&graph), None, "an import cycle between top-level modules; the graph: {graph:#?}");
}

#[test]
fn domain_modules_import_nothing_from_the_api_or_the_wiring() {
    let graph = graph();
    let mut wrong = Vec::new();
    for module in DOMAIN {
        let names = graph.get(*module).unwrap_or_else(|| panic!("no module {module} in src/"));
        for outer in OUTER {
            if names.contains(*outer) {
                wrong.push(format!("{module} -> {outer}"));
            }
        }
    }
    assert!(wrong.is_empty(), "domain modules reach up: {wrong:?}");
    // Every module of the library is either domain or outer: a new one must be placed.
    let unplaced: Vec<&String> =
        graph.keys().filter(|m| !DOMAIN.contains(&m.as_str()) && !OUTER.contains(&m.as_str())).collect();
    assert!(unplaced.is_empty(), "modules in neither list: {unplaced:?}");
}
