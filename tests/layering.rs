//! The crate's layers point one way (STYLE.md): a picture of the imports between the top-level
//! modules of `src/`, test modules included, has no cycle, and the lower layers import nothing
//! from the layers above them. The picture is drawn from the source text: every `crate::name`
//! outside comments is an edge from the file's top-level module to `name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// The text with `//` comments removed (string literals holding `//` are rare enough here to
/// only ever remove edges, never add them).
fn without_comments(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn import_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        let text = without_comments(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                edges.insert(name);
            }
        }
    }
    graph
}

/// A cycle in the graph as a path `a -> b -> .. -> a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, state: &mut BTreeMap<String, u8>, path: &mut Vec<String>) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut state, &mut Vec::new()))
}

#[test]
fn the_module_imports_have_no_cycle() {
    let graph = import_graph();
    for module in ["ir", "caffe", "onnx", "device", "ops", "graph", "synth", "app"] {
        assert!(graph.contains_key(module), "module {module} not found under src/: {:?}", graph.keys());
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the imports form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn lower_layers_import_nothing_from_above() {
    let graph = import_graph();
    let above_all = ["graph", "synth", "bench", "io", "app", "train", "convert", "gradcheck", "dataset"];
    let rules: [(&str, &[&str]); 5] = [
        ("ir", &["caffe", "onnx", "device", "ops", "weights"]),
        ("caffe", &["onnx", "device", "ops", "weights"]),
        ("onnx", &["device", "ops", "weights"]),
        ("device", &["ops", "caffe", "onnx"]),
        ("ops", &["caffe", "onnx", "weights"]),
    ];
    for (module, forbidden) in rules {
        let imports = &graph[module];
        for name in forbidden.iter().chain(&above_all) {
            assert!(!imports.contains(*name), "{module} imports {name}, a layer above it; it imports {imports:?}");
        }
    }
}

/// The checker itself finds a cycle when there is one.
#[test]
fn a_planted_cycle_is_found() {
    let mut graph = Graph::new();
    for (a, b) in [("ir", "tensor"), ("caffe", "ir"), ("graph", "caffe"), ("ir", "graph")] {
        graph.entry(a.to_string()).or_default().insert(b.to_string());
    }
    let cycle = find_cycle(&graph).expect("the planted cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.len() == 4, "{cycle:?}");
    graph.get_mut("ir").unwrap().remove("graph");
    assert_eq!(find_cycle(&graph), None);
}
