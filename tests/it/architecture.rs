//! The house rules, checked on the source: which top-level module may import which.
//!
//! - No circle between top-level modules (`crate::<module>`), so that each can be read, tested
//!   and changed from the bottom up.
//! - The pure core — `domain`, `pricing`, `mapping`, `reconcile`, `problem` — imports only the
//!   core: no connector, store, HTTP, pipeline or command.
//! - No file in `src/` over 700 lines, counting the code before its `#[cfg(test)]` module (a
//!   `tests.rs` that is a module's tests is not counted).
//!
//! Imports are read from the text (`crate::<module>` anywhere outside a test module): a rule
//! that a `use` could sneak past unseen would not be worth having.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CORE: &[&str] = &["domain", "pricing", "mapping", "reconcile", "problem"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file's top-level module and its code without the test module.
fn files() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).unwrap().to_path_buf();
            let first = relative
                .components()
                .next()?
                .as_os_str()
                .to_str()?
                .to_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            Some((module, relative, code))
        })
        .collect()
}

fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, code) in files() {
        let entry = graph.entry(module.clone()).or_default();
        for target in imports(&code) {
            if target != module {
                entry.insert(target);
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_a_circle() {
    let graph = graph();
    // Depth-first search for a back edge; the path found is printed.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_pure_core_imports_only_the_core() {
    for (module, path, code) in files() {
        if !CORE.contains(&module.as_str()) {
            continue;
        }
        let forbidden: Vec<String> = imports(&code)
            .into_iter()
            .filter(|t| !CORE.contains(&t.as_str()))
            .collect();
        assert!(
            forbidden.is_empty(),
            "src/{} (core) imports {forbidden:?}",
            path.display()
        );
    }
}

#[test]
fn no_source_file_is_over_700_lines_before_its_tests() {
    let long: Vec<String> = files()
        .into_iter()
        .filter(|(_, path, _)| !path.ends_with("tests.rs"))
        .filter(|(_, _, code)| code.lines().count() > 700)
        .map(|(_, path, code)| format!("src/{} ({} lines)", path.display(), code.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}
