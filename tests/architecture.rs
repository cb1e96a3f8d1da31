//! The source tree's architecture, kept by a test: every module of `src/` belongs to a layer (a
//! top-level folder or file), a module uses only its own layer and the layers below it, and no
//! two modules use each other, directly or through others.
//!
//! It reads the paths in the code itself: `use` trees and paths in expressions that start with
//! `crate::`, `super::` or the name of a child module. Comments and literals are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first. A module may use modules of its own layer and of the layers before
/// it in this list.
const LAYERS: &[(&str, &[&str])] = &[
    ("files", &["files"]),
    ("the process's environment", &["pachyderm", "stop"]),
    ("wandb", &["wandb"]),
    ("device", &["device"]),
    ("formats", &["formats"]),
    ("report", &["report"]),
    ("stages", &["stages"]),
    ("the command line", &["crate", "panic_report", "fuzz_tests"]),
];

#[test]
fn the_source_tree_has_no_cycles_and_no_upward_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let modules: BTreeSet<String> = files.keys().map(|f| module_of(f)).collect();
    // The graph, for `cargo test --test architecture -- --nocapture`.
    for (module, targets) in graph(&files, &modules) {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{module} → {}", targets.join(", "));
    }
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "the module graph breaks the architecture:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_cycle_through_three_modules_is_found_and_named() {
    let problems = check(&fixture(&[
        ("main.rs", "mod files; mod formats;"),
        ("files/mod.rs", "pub mod a; pub mod b;"),
        ("files/a.rs", "use crate::files::b::B;"),
        ("files/b.rs", "use super::c; pub struct B;"),
        ("files/c.rs", "fn f() { crate::files::a::g(); }"),
        (
            "formats/mod.rs",
            "use crate::files::a; // use crate::files::b\n",
        ),
    ]));
    assert_eq!(
        problems,
        ["a cycle: files::a → files::b → files::c → files::a"]
    );
}

#[test]
fn an_upward_import_is_found_and_named() {
    let problems = check(&fixture(&[
        ("main.rs", "mod files; mod report;"),
        ("files/mod.rs", "pub mod output;"),
        (
            "files/output.rs",
            "use crate::report::{plots::{self, Plot}, metrics};\nlet s = \"crate::stages::x\";",
        ),
        ("report/mod.rs", "pub mod plots;"),
        ("report/plots.rs", "pub struct Plot;"),
    ]));
    assert_eq!(
        problems,
        [
            "files::output (layer files) uses report (layer report), a layer above its own",
            "files::output (layer files) uses report::plots (layer report), a layer above its own",
        ]
    );
}

#[test]
fn a_child_that_uses_its_parent_which_uses_it_is_a_cycle() {
    let problems = check(&fixture(&[
        ("main.rs", "mod stages;"),
        (
            "stages/mod.rs",
            "mod train; pub use train::run; pub struct Args;",
        ),
        ("stages/train.rs", "use super::Args; pub fn run() {}"),
    ]));
    assert_eq!(problems, ["a cycle: stages → stages::train → stages"]);
}

#[test]
fn a_module_outside_every_layer_is_reported() {
    let problems = check(&fixture(&[
        ("main.rs", "mod misc;"),
        ("misc.rs", "fn f() {}"),
    ]));
    assert_eq!(
        problems,
        ["misc belongs to no layer: put it in a layer's folder or add it to LAYERS"]
    );
}

#[test]
fn super_in_an_inline_module_is_the_enclosing_file() {
    let problems = check(&fixture(&[
        ("main.rs", "mod files; mod formats;"),
        ("files/mod.rs", "pub mod walk;"),
        (
            "files/walk.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::walk;\n}",
        ),
        (
            "formats/mod.rs",
            "fn g() { let c = '{'; let l: &'static str = r#\"super::x\"#; crate::files::walk::f(); }",
        ),
    ]));
    assert!(problems.is_empty(), "{problems:?}");
}

fn fixture(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect()
}

/// Every `.rs` file under `dir`, by its path relative to `root`.
fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            files.insert(relative.to_string_lossy().replace('\\', "/"), text);
        }
    }
}

/// The module a file defines: `main.rs` is `crate`, `a/mod.rs` and `a.rs` are `a`.
fn module_of(file: &str) -> String {
    let stem = file.strip_suffix(".rs").expect("a .rs file");
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    if stem == "main" {
        "crate".into()
    } else {
        stem.replace('/', "::")
    }
}

/// What is wrong with the tree of `files` (paths relative to `src/`): cycles, upward imports,
/// modules outside every layer. Empty when nothing is.
fn check(files: &BTreeMap<String, String>) -> Vec<String> {
    let modules: BTreeSet<String> = files.keys().map(|f| module_of(f)).collect();
    let graph = graph(files, &modules);
    let mut problems = Vec::new();
    for module in &modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "{module} belongs to no layer: put it in a layer's folder or add it to LAYERS"
            ));
        }
    }
    for (module, targets) in &graph {
        let Some(from) = layer_of(module) else {
            continue;
        };
        for target in targets {
            if let Some(to) = layer_of(target)
                && to > from
            {
                problems.push(format!(
                    "{module} (layer {}) uses {target} (layer {}), a layer above its own",
                    LAYERS[from].0, LAYERS[to].0
                ));
            }
        }
    }
    problems.extend(
        cycles(&graph)
            .into_iter()
            .map(|cycle| format!("a cycle: {}", cycle.join(" → "))),
    );
    problems
}

/// Each module and the other modules it uses.
fn graph(
    files: &BTreeMap<String, String>,
    modules: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    files
        .iter()
        .map(|(file, text)| {
            let module = module_of(file);
            let mut used = uses(&module, &tokens(text), modules);
            used.remove(&module);
            (module, used)
        })
        .collect()
}

/// The index in `LAYERS` of the layer `module` belongs to.
fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|(_, tops)| tops.contains(&top))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The identifiers, `::` and punctuation of Rust source, without comments, strings and
/// character literals.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if c == 'r' && matches!(next, Some('"' | '#')) && raw_string_start(&chars, i + 1) {
            let mut hashes = 0;
            i += 1;
            while chars[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|h| chars.get(i + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), or a lifetime ('a), which is skipped
            // as its quote alone.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // b"..." and br"...": the string follows.
            if matches!(word.as_str(), "b" | "br" | "c" | "cr") && chars.get(i) == Some(&'"') {
                i = skip_string(&chars, i + 1);
            } else {
                tokens.push(Token::Ident(word));
            }
        } else if c == ':' && next == Some(':') {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    tokens
}

/// Whether a raw string opens at `i` (`#…#"` or `"`).
fn raw_string_start(chars: &[char], mut i: usize) -> bool {
    while chars.get(i) == Some(&'#') {
        i += 1;
    }
    chars.get(i) == Some(&'"')
}

/// The index after the string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The modules that the code of `module` uses, resolved against `modules`.
fn uses(module: &str, tokens: &[Token], modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    // Inline modules (`mod tests { … }`) and the brace depth each opened at: `super` in them is
    // relative to them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let here = inline
            .last()
            .map_or(module.to_owned(), |(path, _)| path.clone());
        match &tokens[i] {
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    inline.push((join(&here, name), depth));
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word) if word == "use" => {
                let (paths, end) = use_tree(tokens, i + 1);
                for path in paths {
                    if let Some(target) = resolve(&here, module, &path, modules) {
                        used.insert(target);
                    }
                }
                i = end;
                continue;
            }
            Token::Ident(_)
                if !matches!(i.checked_sub(1).map(|p| &tokens[p]), Some(Token::PathSep)) =>
            {
                let (path, end) = simple_path(tokens, i);
                if path.len() > 1
                    && let Some(target) = resolve(&here, module, &path, modules)
                {
                    used.insert(target);
                }
                i = end.max(i + 1);
                continue;
            }
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, at)| *at == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    used
}

fn join(parent: &str, name: &str) -> String {
    if parent == "crate" {
        name.to_owned()
    } else {
        format!("{parent}::{name}")
    }
}

/// The paths of a `use` tree starting at `i`, each a list of segments, and the index after it.
fn use_tree(tokens: &[Token], i: usize) -> (Vec<Vec<String>>, usize) {
    let mut paths = Vec::new();
    let end = use_subtree(tokens, i, &[], &mut paths);
    (paths, end)
}

fn use_subtree(
    tokens: &[Token],
    mut i: usize,
    prefix: &[String],
    paths: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(i) {
            Some(Token::Ident(word)) if word == "as" => i += 2,
            Some(Token::Ident(word)) => {
                if word != "self" || path.is_empty() {
                    path.push(word.clone());
                }
                i += 1;
            }
            Some(Token::PathSep) => i += 1,
            Some(Token::Punct('*')) => i += 1,
            Some(Token::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Punct('}')) => return i + 1,
                        Some(Token::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_subtree(tokens, i, &path, paths),
                    }
                }
            }
            _ => {
                paths.push(path);
                return i;
            }
        }
    }
}

/// The path of identifiers joined by `::` that starts at `i`, and the index after it.
fn simple_path(tokens: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    while let Some(Token::Ident(word)) = tokens.get(i) {
        path.push(word.clone());
        i += 1;
        if tokens.get(i) != Some(&Token::PathSep) {
            break;
        }
        i += 1;
    }
    (path, i)
}

/// The module of the crate that `path`, written in `here` (an inline module of `file`'s, or
/// `file` itself), names: the longest prefix that is a module. `None` for other crates and for
/// names that are not paths into the crate.
fn resolve(here: &str, file: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let (mut base, rest) = match path.first()?.as_str() {
        "crate" => ("crate".to_owned(), &path[1..]),
        "super" => {
            let mut base = here.to_owned();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base = match base.rsplit_once("::") {
                    Some((parent, _)) => parent.to_owned(),
                    None => "crate".to_owned(),
                };
                rest = &rest[1..];
            }
            (base, rest)
        }
        "self" => (here.to_owned(), &path[1..]),
        // A child module, named without `self::` (in an inline `mod tests`, through its
        // `use super::*`).
        first if modules.contains(&join(file, first)) => (file.to_owned(), path),
        _ => return None,
    };
    let mut found = modules.contains(&base).then(|| base.clone());
    for segment in rest {
        base = join(&base, segment);
        if modules.contains(&base) {
            found = Some(base.clone());
        } else {
            break;
        }
    }
    // An inline module's path resolves to its file's module.
    found.or_else(|| {
        let mut prefix = here;
        loop {
            if modules.contains(prefix) {
                return Some(prefix.to_owned());
            }
            prefix = prefix.rsplit_once("::")?.0;
        }
    })
}

/// Every cycle of `graph`, one per strongly connected component of more than one module, as
/// the modules along it, the first again at the end.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut assigned: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        if assigned.contains(start.as_str()) {
            continue;
        }
        // The modules reachable from `start` that also reach it: its component.
        let forward = reachable(graph, start);
        let component: BTreeSet<&str> = forward
            .iter()
            .copied()
            .filter(|m| reachable(graph, m).contains(start.as_str()))
            .collect();
        assigned.extend(component.iter().copied());
        if component.len() > 1 {
            found.push(path_back(graph, start, &component));
        }
    }
    found
}

fn reachable<'a>(graph: &'a BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<&str> = graph
        .get(from)
        .map_or(Vec::new(), |t| t.iter().map(String::as_str).collect());
    while let Some(module) = pending.pop() {
        if let Some((key, targets)) = graph.get_key_value(module)
            && seen.insert(key.as_str())
        {
            pending.extend(targets.iter().map(String::as_str));
        }
    }
    seen
}

/// The shortest way from `start` back to itself within `component`, by breadth-first search.
fn path_back(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    component: &BTreeSet<&str>,
) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(module) = queue.pop_front() {
        for target in graph.get(module).into_iter().flatten() {
            let target = target.as_str();
            if !component.contains(target) {
                continue;
            }
            if target == start {
                let mut path = vec![start.to_owned()];
                let mut at = module;
                while at != start {
                    path.push(at.to_owned());
                    at = came_from[at];
                }
                path.push(start.to_owned());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(target) {
                came_from.insert(target, module);
                queue.push_back(target);
            }
        }
    }
    vec![start.to_owned()]
}
