//! The crate's rooms depend on each other one way only: no cycle between top-level modules
//! (`cli`, `cmd`, `csi`, `volume`, `sync`, `provider`, …), nor between the rooms inside
//! `provider` (`vault`, `aws`, `plugin`, `access`, `tokens`, …), whose shared interface is
//! `provider` itself. A room that uses one that uses it back is one concern split across two
//! places. No cluster needed: the sources are read as text.

#[path = "module_graph/scan.rs"]
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use scan::{Reference, SourceFile};

/// The parents whose child modules must form an acyclic graph: the crate root and `provider`.
const LEVELS: &[&[&str]] = &[&[], &["provider"]];

/// An edge between two rooms, with the first place that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn sources() -> (Vec<SourceFile>, Vec<Reference>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = scan::crate_files(&src);
    let references = files.iter().flat_map(scan::references).collect();
    (files, references)
}

/// The child modules of `parent` and the edges between them.
fn room_graph(files: &[SourceFile], references: &[Reference], parent: &[&str]) -> Graph {
    let room_of = |module: &[String]| -> Option<String> {
        let inside = module.len() > parent.len() && parent.iter().zip(module).all(|(p, m)| p == m);
        inside.then(|| module[parent.len()].clone())
    };
    let rooms: BTreeSet<String> = files.iter().filter_map(|f| room_of(&f.module)).collect();
    let mut graph: Graph = rooms.iter().map(|r| (r.clone(), BTreeMap::new())).collect();
    for reference in references {
        let (Some(from), Some(to)) = (room_of(&reference.from), room_of(&reference.to)) else {
            continue;
        };
        if from != to && rooms.contains(&to) {
            let place = format!(
                "{}:{} ({})",
                reference
                    .file
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .display(),
                reference.line,
                reference.to.join("::")
            );
            graph.get_mut(&from).unwrap().entry(to).or_insert(place);
        }
    }
    graph
}

/// Every cycle found by a depth-first search, each once (as the path that closes it first).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        graph: &Graph,
        room: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|r| r == room) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(room.to_owned());
            found.push(cycle);
            return;
        }
        if done.contains(room) {
            return;
        }
        stack.push(room.to_owned());
        for next in graph[room].keys() {
            visit(graph, next, stack, done, found);
        }
        stack.pop();
        done.insert(room.to_owned());
    }
    let (mut stack, mut done, mut found) = (Vec::new(), BTreeSet::new(), Vec::new());
    for room in graph.keys() {
        visit(graph, room, &mut stack, &mut done, &mut found);
    }
    found
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    let mut text = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        text += &format!(
            "\n    {} -> {}: {}",
            pair[0], pair[1], graph[&pair[0]][&pair[1]]
        );
    }
    text
}

#[test]
fn rooms_depend_on_each_other_one_way() {
    let (files, references) = sources();
    let mut failures = Vec::new();
    for parent in LEVELS {
        let graph = room_graph(&files, &references, parent);
        assert!(graph.len() > 3, "{parent:?} has rooms: {:?}", graph.keys());
        for cycle in cycles(&graph) {
            let level = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            failures.push(format!("in {level}: {}", describe(&graph, &cycle)));
        }
    }
    assert!(
        failures.is_empty(),
        "module cycles:\n{}",
        failures.join("\n")
    );
}

/// Each store keymount talks to is its own room: what two of them share (token parsing,
/// address checks, slots) lives beside them in `provider`, not in one of them.
#[test]
fn providers_do_not_use_each_other() {
    let (files, references) = sources();
    let graph = room_graph(&files, &references, &["provider"]);
    let backends = ["vault", "aws", "plugin"];
    let mut failures = Vec::new();
    for from in backends {
        for (to, place) in &graph[from] {
            if backends.contains(&to.as_str()) {
                failures.push(format!("provider::{from} -> provider::{to}: {place}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The flags are parsed in `cli` and turned into plain settings there or in `cmd`; nothing
/// else knows a command line exists.
#[test]
fn only_the_commands_use_the_command_line() {
    let (files, references) = sources();
    let graph = room_graph(&files, &references, &[]);
    let users: Vec<_> = graph
        .iter()
        .filter(|(from, _)| *from != "cmd")
        .filter_map(|(from, to)| to.get("cli").map(|place| format!("{from}: {place}")))
        .collect();
    assert!(users.is_empty(), "{users:?}");
    let cmd_users: Vec<_> = graph
        .iter()
        .filter_map(|(from, to)| to.get("cmd").map(|place| format!("{from}: {place}")))
        .collect();
    assert!(cmd_users.is_empty(), "{cmd_users:?}");
}

#[test]
fn every_source_file_is_read() {
    let (files, references) = sources();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut on_disk = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path != src.join("main.rs") {
                on_disk.push(path);
            }
        }
    }
    let read: BTreeSet<_> = files.iter().map(|f| f.path.clone()).collect();
    let missed: Vec<_> = on_disk.iter().filter(|p| !read.contains(*p)).collect();
    assert!(
        missed.is_empty(),
        "files not reached from src/lib.rs: {missed:?}"
    );
    // The scan sees what it must: a `use` tree, a `super::` path, an inline test module.
    let has = |from: &str, to: &str| {
        references
            .iter()
            .any(|r| r.from.join("::") == from && r.to.join("::").starts_with(to))
    };
    assert!(has("volume::publish", "volume::context::VolumeContext"));
    assert!(has("cmd::node", "provider::plugin::PluginClients"));
    assert!(has("names::tests", "names::subdomain") || has("names::tests", "names"));
}

#[test]
fn a_cycle_is_found_and_shown() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), format!("{from}.rs:1"));
        graph.entry(to.into()).or_default();
    }
    graph.get_mut("d").unwrap().clear();
    let found = cycles(&graph);
    assert_eq!(found, vec![vec!["a", "b", "c", "a"]]);
    assert_eq!(
        describe(&graph, &found[0]),
        "a -> b -> c -> a\n    a -> b: a.rs:1\n    b -> c: b.rs:1\n    c -> a: c.rs:1"
    );
}
