//! The host's layers, lowest first, and the rule that holds them: a module
//! may use its own layer and the ones below, never one above, and no two
//! modules use each other, directly or around a circle. `ARCHITECTURE.md`
//! explains the layers; this test keeps them true.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the host, by layer.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundation", &["model", "clock", "runtime", "pack", "oci"]),
    ("store", &["store"]),
    (
        "profile",
        &[
            "pipeline", "stages", "plugins", "breaker", "shadow", "scoring", "segments", "ingest",
            "replay",
        ],
    ),
    (
        "messaging rules",
        &["policy", "render", "tracking", "privacy", "mailbox"],
    ),
    ("journeys", &["journeys"]),
    ("delivery", &["outbox", "consent", "feedback"]),
    ("analytics", &["kpis", "ab", "metrics", "backtest"]),
    ("worker", &["scheduler"]),
    ("edge", &["api", "cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

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

/// `module -> modules it names as crate::x`, with the files that do,
/// leaving out unit tests (they may reach anywhere).
fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Comments may name any module; only code counts.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let targets = graph.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                targets.entry(name).or_default().insert(relative.clone());
            }
        }
    }
    graph
}

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(host_src().join("lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 20, "{modules:?}");
    for module in modules {
        assert!(
            layer_of(module).is_some(),
            "module `{module}` has no layer: add it to LAYERS in tests/tests/architecture.rs and to ARCHITECTURE.md"
        );
    }
}

#[test]
fn no_module_imports_from_a_layer_above() {
    let mut upward = Vec::new();
    for (module, targets) in imports(&host_src()) {
        let Some(from) = layer_of(&module) else {
            continue;
        };
        for (target, files) in targets {
            if let Some(to) = layer_of(&target)
                && to > from
            {
                upward.push(format!(
                    "{module} ({}) uses {target} ({}) in {files:?}",
                    LAYERS[from].0, LAYERS[to].0
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = imports(&host_src());
    // Depth-first search; a module met again while still on the path
    // closes a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            cycles.push(cycle.join(" -> "));
            return;
        }
        path.push(module.to_owned());
        for target in graph.get(module).into_iter().flat_map(|t| t.keys()) {
            if graph.contains_key(target) {
                visit(target, graph, path, done, cycles);
            }
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    // The scan must find real edges, or the two tests above prove nothing.
    let graph = imports(&host_src());
    assert!(graph["api"].contains_key("store"), "{:?}", graph["api"]);
    assert!(graph["journeys"].contains_key("policy"));
    assert!(graph["scoring"].contains_key("pipeline"));
}
