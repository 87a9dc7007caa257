//! Module layering of the `weir` crate, checked from its source text (std only, no `weir` API).
//!
//! Every `.rs` file under `src/` is tokenized and the paths it names are collected:
//! `crate::a::b` (with `use crate::{a::x, b::{y, z}}` groups expanded) and `super::` / `self::`
//! paths resolved against the file's module (`src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`,
//! inline `mod x { .. }` blocks included). Two checks follow:
//!
//! * top-level modules obey [`LAYERS`]: a module may only name modules of a strictly lower
//!   layer (so `scheduler` and `runner`, both layer 3, stay independent), and every module that
//!   exists must be in the table (one listed there but absent is skipped);
//! * within each top-level module the files have no import cycles. A path counts as an edge to
//!   the file defining the deepest existing module it names (`crate::a::b::C` is `src/a/b.rs`,
//!   `src/a/b/mod.rs` or else `src/a/mod.rs`); edges from a `mod.rs` into its own subtree are
//!   declarations and re-exports and are left out, a child naming its parent `mod.rs` is not.
//!
//! Skipped: comments (`//`, `///`, `//!`, `/* */`), string and char literals, paths into
//! `crate::testing` (fixtures, at the top), the crate root (`lib.rs`, `main.rs`), and test-only
//! modules: `#[cfg(test)] mod x { .. }` up to its closing brace, and the whole file of an
//! out-of-line `#[cfg(test)] #[path = "x_tests.rs"] mod x;`. Other forms (`cfg(all(test, ..))`,
//! `#[cfg(test)]` on an item that is not a module) are read as ordinary code. Bare relative
//! paths (`use child::X` in a `mod.rs`) are not seen: they can only name children.
//!
//! `cargo test --test layering -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module may only depend on modules of a strictly lower layer.
#[rustfmt::skip]
const LAYERS: &[(&str, u32)] = &[
    ("text", 0), ("kv", 0), ("store", 0), ("cuda", 0), ("cpu", 0), // leaves: no crate imports
    ("step", 1),                      // one step's data: requests, scheduler and runner output
    ("bench", 1),                     // the load generator (names the CPU it ran on)
    ("kv_events", 1),                 // KV cache events published over ZeroMQ
    ("metrics", 2), ("models", 2),    // the metrics registry, the model math
    ("scheduler", 3), ("runner", 3),  // the scheduler and the model runner, independent
    ("engine", 4),                    // the engine core and its thread, above both
    ("manager", 5),                   // the model manager
    ("api", 6),                       // HTTP
    ("config", 7),                    // configuration that builds everyone's types
    ("testing", 8),                   // test fixtures (behind `test-util`), above everything
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

// ---------------------------------------------------------------------------------------------
// Tokens: (text, 1-based line). Identifiers (and numbers), `::`, single punctuation, and string
// literals as `"` + contents; comments, char literals and lifetime quotes are dropped.

type Toks = [(String, usize)];

fn tok(t: &Toks, k: usize) -> &str {
    t.get(k).map_or("", |(s, _)| s.as_str())
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

fn tokenize(src: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut lines = vec![1]; // lines[k]: the line of char k
    for &ch in &c {
        lines.push(lines[lines.len() - 1] + usize::from(ch == '\n'));
    }
    let is_word = |x: &char| x.is_alphanumeric() || *x == '_';
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let (mut i, mut out) = (0, Vec::new());
    while i < c.len() {
        let (start, ch, mut token) = (i, c[i], None);
        if ch == '/' && at(i + 1) == '/' {
            i += c[i..].iter().take_while(|&&x| x != '\n').count();
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    ('/', '*') => (depth, i) = (depth + 1, i + 1),
                    ('*', '/') => (depth, i) = (depth - 1, i + 1),
                    ('\0', _) => break,
                    _ => {}
                }
                i += 1;
                if depth == 0 {
                    break;
                }
            }
        } else if ch == '\'' {
            // '\n', '\'', '\u{..}' and 'x' are chars; anything else starts a lifetime or label.
            let close = || c.get(i + 3..)?.iter().position(|&x| x == '\'');
            i += match (at(i + 1), at(i + 2)) {
                ('\\', _) => 4 + close().unwrap_or(0),
                (_, '\'') => 3,
                _ => 1,
            };
        } else if ch == '"' {
            (token, i) = read_str(&c, i + 1, None);
        } else if is_word(&ch) {
            i += c[i..].iter().take_while(|x| is_word(x)).count();
            let word: String = c[start..i].iter().collect();
            let hashes = c[i..].iter().take_while(|&&x| x == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && at(i + hashes) == '"' {
                (token, i) = read_str(&c, i + hashes + 1, Some(hashes));
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                (token, i) = read_str(&c, i + 1, None);
            } else if word == "r" && hashes == 1 {
                i += 1; // raw identifier r#name: `name` comes next
            } else {
                token = Some(word);
            }
        } else if ch == ':' && at(i + 1) == ':' {
            (token, i) = (Some("::".to_string()), i + 2);
        } else {
            (token, i) = ((!ch.is_whitespace()).then(|| ch.to_string()), i + 1);
        }
        out.extend(token.map(|s| (s, lines[start])));
    }
    out
}

/// A string body from `i` (after the opening quote); `raw`: the `#` count of a raw string.
fn read_str(c: &[char], mut i: usize, raw: Option<usize>) -> (Option<String>, usize) {
    let start = i;
    while i < c.len() {
        let hashes = || c[i + 1..].iter().take_while(|&&x| x == '#').count();
        match (c[i], raw) {
            ('\\', None) => i += 1,
            ('"', None) => break,
            ('"', Some(h)) if hashes() >= h => break,
            _ => {}
        }
        i += 1;
    }
    let body: String = c[start..i.min(c.len())].iter().collect();
    (Some(format!("\"{body}")), i + 1 + raw.unwrap_or(0))
}

/// Index after the group opened at `k`, or None if it never closes.
fn skip_group(t: &Toks, mut k: usize, open: &str, close: &str) -> Option<usize> {
    let mut depth = 0usize;
    while k < t.len() {
        if tok(t, k) == open {
            depth += 1;
        } else if tok(t, k) == close {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(k + 1);
            }
        }
        k += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Paths.

/// A path named in code: `target` is absolute (no `crate`), `written` as in the source with
/// brace groups expanded.
#[derive(Debug)]
struct Ref {
    file: String,
    line: usize,
    written: String,
    target: Vec<String>,
}

type Out = Vec<(Vec<String>, usize)>;

/// Parses the use tree or path tail at `j` (just after `prefix::`), pushing each expanded path
/// with the line of its last segment. Returns the index after it.
fn parse_tree(t: &Toks, mut j: usize, mut segs: Vec<String>, out: &mut Out) -> usize {
    loop {
        let (w, line) = (tok(t, j), t.get(j).map_or(0, |x| x.1));
        if w == "{" {
            j += 1;
            while !matches!(tok(t, j), "}" | "") {
                j = parse_tree(t, j, segs.clone(), out);
                if tok(t, j) != "," {
                    break;
                }
                j += 1;
            }
            return j + usize::from(tok(t, j) == "}");
        }
        // `self` names the module so far, as does a glob (kept in `written`).
        if w != "self" && (is_ident(w) || w == "*") {
            segs.push(w.to_string());
        }
        if is_ident(w) && tok(t, j + 1) == "::" {
            j += 2;
            continue;
        }
        out.push((segs, line));
        // After the last segment: skip an `as` alias; `<` (turbofish) or the like ends the path.
        let (alias, glob) = (
            2 * usize::from(tok(t, j + 1) == "as"),
            usize::from(w == "*"),
        );
        return j + if is_ident(w) { 1 + alias } else { glob };
    }
}

/// The paths one file names, and the test-only files its `#[cfg(test)] mod x;` items load.
fn scan_file(file: &str, src: &str) -> (Vec<Ref>, Vec<String>) {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let (t, module) = (tokenize(src), module_path(file));
    let (mut refs, mut test_files, mut inline) = (Vec::new(), Vec::new(), Vec::new());
    let (mut i, mut depth) = (0, 0usize);
    while i < t.len() {
        let w = tok(&t, i);
        if (0..7).all(|k| tok(&t, i + k) == CFG_TEST[k]) {
            if let Some(next) = skip_test_mod(&t, i + 7, file, &mut test_files) {
                i = next;
                continue;
            }
        }
        if w == "mod" && is_ident(tok(&t, i + 1)) && tok(&t, i + 2) == "{" {
            inline.push((tok(&t, i + 1).to_string(), depth));
            (i, depth) = (i + 3, depth + 1);
            continue;
        } else if w == "{" {
            depth += 1;
        } else if w == "}" {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
        } else if matches!(w, "crate" | "super" | "self")
            && tok(&t, i + 1) == "::"
            && (i == 0 || tok(&t, i - 1) != "::")
        {
            let mut base = module.clone();
            base.extend(inline.iter().map(|(name, _)| name.clone()));
            if w == "crate" {
                base.clear();
            }
            let (mut written, mut j) = (w.to_string(), i + 2);
            let mut ok = w != "super" || base.pop().is_some();
            while w == "super" && tok(&t, j) == "super" && tok(&t, j + 1) == "::" {
                ok &= base.pop().is_some();
                (written, j) = (written + "::super", j + 2);
            }
            let mut paths = Vec::new();
            i = parse_tree(&t, j, Vec::new(), &mut paths);
            for (segs, line) in paths.into_iter().filter(|_| ok) {
                let written = [vec![written.clone()], segs.clone()].concat().join("::");
                let mut target = [base.clone(), segs].concat();
                target.retain(|s| s != "*");
                let file = file.to_string();
                refs.push(Ref {
                    file,
                    line,
                    written,
                    target,
                });
            }
            continue;
        }
        i += 1;
    }
    (refs, test_files)
}

/// At `k`, just after `#[cfg(test)]`: if a module follows, the index after it (an out-of-line
/// module's file goes to `test_files`); None if another item follows.
fn skip_test_mod(t: &Toks, mut k: usize, file: &str, tests: &mut Vec<String>) -> Option<usize> {
    let mut path_attr = None;
    while tok(t, k) == "#" && tok(t, k + 1) == "[" {
        if tok(t, k + 2) == "path" && tok(t, k + 3) == "=" {
            path_attr = tok(t, k + 4).strip_prefix('"');
        }
        k = skip_group(t, k + 1, "[", "]")?;
    }
    k += usize::from(tok(t, k) == "pub");
    if tok(t, k) == "(" {
        k = skip_group(t, k, "(", ")")?;
    }
    let name = tok(t, k + 1);
    if tok(t, k) != "mod" || !is_ident(name) {
        return None;
    } else if tok(t, k + 2) == "{" {
        return skip_group(t, k + 2, "{", "}");
    }
    // `#[path]` is relative to the file's directory; otherwise a child of the file's module.
    let (dir, stem) = file.trim_end_matches(".rs").rsplit_once('/')?;
    let own = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_string()
    } else {
        format!("{dir}/{stem}")
    };
    match path_attr {
        Some(p) => tests.push(format!("{dir}/{p}")),
        None => tests.extend([format!("{own}/{name}.rs"), format!("{own}/{name}/mod.rs")]),
    }
    (tok(t, k + 2) == ";").then_some(k + 3)
}

/// `src/a/b.rs` -> [a, b]; `src/a/mod.rs` -> [a]; `src/lib.rs`, `src/main.rs` -> [].
fn module_path(file: &str) -> Vec<String> {
    let rel = file.strip_prefix("src/").unwrap_or(file);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if segs.last().is_some_and(|s| s == "mod") || matches!(rel, "lib" | "main") {
        segs.pop();
    }
    segs
}

/// The file defining the deepest existing module that `target` names.
fn module_file(files: &BTreeSet<String>, target: &[String]) -> Option<String> {
    (1..=target.len()).rev().find_map(|k| {
        let p = target[..k].join("/");
        let candidates = [format!("src/{p}.rs"), format!("src/{p}/mod.rs")];
        candidates.into_iter().find(|f| files.contains(f))
    })
}

/// The top-level module of a file (None for the crate root).
fn top(file: &str) -> Option<String> {
    module_path(file).into_iter().next()
}

// ---------------------------------------------------------------------------------------------
// The crate.

/// The crate's files (as `src/...`, test-only files left out) and the paths they name.
fn scan_crate() -> (BTreeSet<String>, Vec<Ref>) {
    let root = Path::new(option_env!("CARGO_MANIFEST_DIR").unwrap_or("."));
    let (mut dirs, mut files) = (vec![root.join("src")], BTreeSet::new());
    let (mut refs, mut tests) = (Vec::new(), Vec::new());
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        for path in entries.map(|e| e.expect("directory entry").path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
                let (file_refs, file_tests) = scan_file(&rel, &src);
                refs.extend(file_refs);
                tests.extend(file_tests);
                files.insert(rel);
            }
        }
    }
    files.retain(|f| !tests.contains(f));
    refs.retain(|r| files.contains(&r.file));
    (files, refs)
}

type Edges<'a> = BTreeMap<(String, String), Vec<&'a Ref>>;

/// `  a -> b (file:line: path)` for each place that names the edge.
fn describe(errors: &mut Vec<String>, (a, b): &(String, String), refs: &[&Ref]) {
    for r in refs {
        let (file, line, path) = (&r.file, r.line, &r.written);
        errors.push(format!("  {a} -> {b} ({file}:{line}: {path})"));
    }
}

/// Strongly connected components of more than one node, each sorted.
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(n) = todo.pop() {
            for (_, to) in edges.iter().filter(|(a, _)| a == n) {
                if seen.insert(to.clone()) {
                    todo.push(to);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.iter().map(|(a, _)| (a, reach(a))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (&n, r) in &reaches {
        if r.contains(n) && !out.iter().any(|c| c.contains(n)) {
            let back = |m: &&String| reaches.get(*m).is_some_and(|mr| mr.contains(n));
            out.push(r.iter().filter(back).cloned().collect());
        }
    }
    out
}

#[test]
fn module_layering() {
    let (files, refs) = scan_crate();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
    let mut edges = Edges::new();
    for r in &refs {
        let (Some(from), Some(to)) = (top(&r.file), r.target.first()) else {
            continue;
        };
        if from != *to && to != "testing" && modules.contains(to) {
            edges.entry((from, to.clone())).or_default().push(r);
        }
    }
    let mut order: Vec<&String> = modules.iter().collect();
    order.sort_by_key(|m| (layer(m).unwrap_or(u32::MAX), *m));
    let mut graph = format!("top-level module graph ({} files):", files.len());
    for m in order {
        let deps: Vec<&str> = edges.keys().filter(|e| &e.0 == m).map(|e| &*e.1).collect();
        let (deps, l) = (
            deps.join(", "),
            layer(m).map_or("?".into(), |l| l.to_string()),
        );
        let deps = if deps.is_empty() { "(none)" } else { &deps };
        graph += &format!("\n{m} (layer {l}) -> {deps}");
    }
    println!("{graph}"); // one call, so that parallel tests do not interleave with it

    let mut errors = Vec::new();
    for m in modules.iter().filter(|m| layer(m).is_none()) {
        let msg = format!("module `{m}` is not in LAYERS: add it to tests/layering.rs");
        errors.push(msg);
    }
    for (edge @ (a, b), refs) in &edges {
        if let (Some(la), Some(lb)) = (layer(a), layer(b)) {
            if lb >= la {
                let msg = format!("{a} (layer {la}) may not depend on {b} (layer {lb}):");
                errors.push(msg);
                describe(&mut errors, edge, refs);
            }
        }
    }
    for (a, b) in [("scheduler", "runner"), ("runner", "scheduler")] {
        let edge = (a.to_string(), b.to_string());
        if let Some(refs) = edges.get(&edge) {
            let msg = format!("scheduler and runner must stay independent: {a} imports {b}:");
            errors.push(msg);
            describe(&mut errors, &edge, refs);
        }
    }
    let errors = errors.join("\n");
    assert!(errors.is_empty(), "layering violations:\n{errors}");
}

#[test]
fn no_file_level_cycles() {
    let (files, refs) = scan_crate();
    let mut edges = Edges::new();
    let within_module = |r: &&Ref| top(&r.file).as_ref() == r.target.first();
    for r in refs.iter().filter(within_module) {
        let Some(to) = module_file(&files, &r.target) else {
            continue;
        };
        let parent_dir = r.file.strip_suffix("mod.rs");
        if to != r.file && !parent_dir.is_some_and(|d| to.starts_with(d)) {
            edges.entry((r.file.clone(), to)).or_default().push(r);
        }
    }
    let mut errors = Vec::new();
    for cycle in cycles(&edges.keys().cloned().collect()) {
        errors.push(format!("cycle: {}", cycle.join(", ")));
        for (edge @ (a, b), refs) in &edges {
            if cycle.contains(a) && cycle.contains(b) {
                describe(&mut errors, edge, &refs[..1]);
            }
        }
    }
    let errors = errors.join("\n");
    assert!(errors.is_empty(), "import cycles between files:\n{errors}");
}

// ---------------------------------------------------------------------------------------------
// The parser itself.

mod parser {
    use super::*;

    /// `written => target @ line` for each path `src` names as `file`.
    fn paths(file: &str, src: &str) -> Vec<String> {
        let refs = scan_file(file, src).0.into_iter();
        refs.map(|r| format!("{} => {} @ {}", r.written, r.target.join("::"), r.line))
            .collect()
    }

    fn targets(file: &str, src: &str) -> Vec<String> {
        let refs = scan_file(file, src).0.into_iter();
        refs.map(|r| r.target.join("::")).collect()
    }

    #[test]
    fn expands_brace_groups() {
        let src =
            "use crate::{a::x, b::{y, z as w, self}, c::*,};\nfn f() { crate::d::E::f::<u8>() }";
        let want = ["a::x", "b::y", "b::z", "b", "c", "d::E::f"];
        assert_eq!(targets("src/m.rs", src), want);
        let src = "use crate::text::{\n    grammar::Constraint,\n};";
        let got = paths("src/api.rs", src);
        let want = "crate::text::grammar::Constraint => text::grammar::Constraint @ 2";
        assert_eq!(got, [want]);
    }

    #[test]
    fn resolves_super_and_self() {
        let src = "use super::c::D;\nfn f() -> super::super::e::F { self::g::H }\nmod i { use super::k; }";
        let want = ["a::c::D", "e::F", "a::b::g::H", "a::b::k"];
        assert_eq!(targets("src/a/b.rs", src), want);
        assert_eq!(targets("src/a/mod.rs", "use super::x::Y;"), ["x::Y"]);
        assert_eq!(paths("src/a/b.rs", "use super::*;"), ["super::* => a @ 1"]);
        assert!(targets("src/a.rs", "use super::super::x;").is_empty());
        assert!(targets("src/a.rs", "fn f(self) { self.x; Self::new() }").is_empty());
    }

    #[test]
    fn strips_comments_and_literals() {
        let src = "// crate::l::X\n/// crate::d::X\n//! crate::i::X\n/* crate::b /* */ crate::b */\n\
                   let s = \"crate::s \\\" crate::e\"; let r = r#\"crate::r\"#; let u = '\\u{1F600}';\n\
                   let q = '\"'; let e = '\\''; fn f<'a>(x: &'a u8) {}\nuse crate::real::Z;";
        assert_eq!(paths("src/m.rs", src), ["crate::real::Z => real::Z @ 7"]);
    }

    #[test]
    fn skips_test_modules() {
        let src =
            "use crate::a::X;\n#[cfg(test)]\nmod tests {\n use crate::t::{Y};\n fn f() { {} }\n}\n\
                   use crate::after::Y;\n#[cfg(test)]\n#[path = \"s_tests.rs\"]\nmod tests;";
        let (refs, tests) = scan_file("src/engine/scheduler.rs", src);
        let got: Vec<String> = refs.iter().map(|r| r.target.join("::")).collect();
        assert_eq!(got, ["a::X", "after::Y"]);
        assert_eq!(tests, ["src/engine/s_tests.rs"]);
        let (_, tests) = scan_file("src/e/s.rs", "#[cfg(test)]\nmod tests;");
        assert_eq!(tests, ["src/e/s/tests.rs", "src/e/s/tests/mod.rs"]);
        let item = "#[cfg(test)]\nuse crate::t::Z;";
        assert_eq!(targets("src/m.rs", item), ["t::Z"], "not a module");
    }

    #[test]
    fn finds_files_and_cycles() {
        let files = ["src/a/mod.rs", "src/a/b.rs", "src/c.rs"];
        let files = files.map(String::from).into();
        let segs = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
        let file = |s: &str| module_file(&files, &segs(s));
        assert_eq!(file("a::b::C").as_deref(), Some("src/a/b.rs"));
        assert_eq!(file("a::Z").as_deref(), Some("src/a/mod.rs"));
        assert_eq!(file("c::d::E").as_deref(), Some("src/c.rs"));
        assert_eq!(file("x"), None);
        assert_eq!(module_path("src/a/mod.rs"), ["a"]);
        assert!(module_path("src/lib.rs").is_empty());
        let edges = [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w"), ("w", "v")];
        let edges: BTreeSet<(String, String)> = edges.map(|(a, b)| (a.into(), b.into())).into();
        assert_eq!(cycles(&edges), [["x", "y", "z"].map(String::from)]);
    }
}
