//! Reads the crate's sources as the compiler finds them (from `src/lib.rs` through every `mod`
//! declaration, `#[path]` included) and lists each path that names a module of the crate
//! (`crate::…`, `super::…`, `self::…`, in `use` trees and in expressions), resolved to an
//! absolute module path. Comments and literals are skipped, so prose never counts.

use std::path::{Path, PathBuf};

/// One reference from code in module `from` to the absolute path `to`.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub(crate) from: Vec<String>,
    pub(crate) to: Vec<String>,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
}

/// A source file and the module its top level is.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) module: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path,
    Punct(char),
    Literal,
}

/// Splits Rust source into the tokens that matter here, each with its line.
fn tokenize(source: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    let count_lines =
        |from: usize, to: usize| chars[from..to].iter().filter(|c| **c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
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
        } else if c == '"' || ((c == 'r' || c == 'b') && raw_or_byte_string(&chars, i)) {
            i = skip_string(&chars, i);
            tokens.push((Token::Literal, line));
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                tokens.push((Token::Literal, line));
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                tokens.push((Token::Literal, line));
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c == ':' && next == Some(':') {
            i += 2;
            tokens.push((Token::Path, line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else {
            i += 1;
            if !c.is_whitespace() {
                tokens.push((Token::Punct(c), line));
            }
        }
        line += count_lines(start, i.min(chars.len()));
    }
    tokens
}

/// True at the `b`/`r` of `b"…"`, `r"…"`, `r#"…"#`, `br"…"` (not of `r#ident`).
fn raw_or_byte_string(chars: &[char], mut i: usize) -> bool {
    if chars[i] == 'b' {
        i += 1;
    }
    if chars.get(i) == Some(&'r') {
        i += 1;
        while chars.get(i) == Some(&'#') {
            i += 1;
        }
    }
    chars.get(i) == Some(&'"')
}

/// The index after the string literal starting at `i` (plain, raw, byte).
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let mut raw = false;
    while chars[i] != '"' && chars[i] != '#' {
        raw |= chars[i] == 'r';
        i += 1;
    }
    let mut hashes = 0;
    while chars[i] == '#' {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    while i < chars.len() {
        if !raw && chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

fn ident(token: Option<&(Token, usize)>) -> Option<&str> {
    match token {
        Some((Token::Ident(name), _)) => Some(name),
        _ => None,
    }
}

/// Expands the use tree starting at `tokens[*i]` into full paths, stopping at `;`.
fn use_tree(
    tokens: &[(Token, usize)],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix.to_vec();
    while *i < tokens.len() {
        match &tokens[*i].0 {
            Token::Ident(name) if name == "as" => {
                *i += 2;
            }
            Token::Ident(name) => {
                path.push(name.clone());
                *i += 1;
            }
            Token::Path => *i += 1,
            Token::Punct('{') => {
                *i += 1;
                loop {
                    use_tree(tokens, i, &path, out);
                    match tokens.get(*i).map(|t| &t.0) {
                        Some(Token::Punct(',')) => *i += 1,
                        _ => break,
                    }
                    if matches!(tokens.get(*i).map(|t| &t.0), Some(Token::Punct('}'))) {
                        break;
                    }
                }
                *i += 1; // '}'
                return;
            }
            Token::Punct('*') => *i += 1,
            _ => break,
        }
    }
    if path.len() > prefix.len() || prefix.is_empty() {
        out.push(path);
    }
}

/// Resolves `crate::`, `super::` and `self::` against module `module`; other paths (extern
/// crates, local names) give `None`.
fn resolve(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// Child module files declared in `tokens` (`mod name;`), with their `#[path]` if any.
fn declared_modules(tokens: &[(Token, usize)]) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut path_attr: Option<String> = None;
    for (i, (token, _)) in tokens.iter().enumerate() {
        if let Token::Ident(word) = token {
            let attribute = i >= 2
                && tokens[i - 1].0 == Token::Punct('[')
                && tokens[i - 2].0 == Token::Punct('#');
            if word == "path" && attribute {
                path_attr = Some(String::new()); // value filled by the caller's text scan
            }
            if word == "mod" {
                if let (Some(name), Some((Token::Punct(';'), _))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    found.push((name.to_owned(), path_attr.take()));
                } else {
                    path_attr = None;
                }
            }
        }
    }
    found
}

/// `#[path = "…"]` values in file order (the tokenizer drops literals).
fn path_attributes(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[path = \""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Every file of the crate reached from `src/lib.rs`, with its module path.
pub(crate) fn crate_files(src: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut pending = vec![(src.join("lib.rs"), Vec::<String>::new())];
    while let Some((path, module)) = pending.pop() {
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tokens = tokenize(&source);
        let mut attrs = path_attributes(&source).into_iter();
        let dir = path.parent().unwrap().to_path_buf();
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let child_dir = if stem == "mod" || stem == "lib" {
            dir.clone()
        } else {
            dir.join(stem)
        };
        for (name, attr) in declared_modules(&tokens) {
            let file = match attr.map(|_| attrs.next().expect("a #[path] value")) {
                Some(rel) => dir.join(rel),
                None if child_dir.join(format!("{name}.rs")).exists() => {
                    child_dir.join(format!("{name}.rs"))
                }
                None => child_dir.join(&name).join("mod.rs"),
            };
            let mut child = module.clone();
            child.push(name);
            pending.push((file, child));
        }
        files.push(SourceFile { path, module });
    }
    files
}

/// Every module reference in `file`, resolved.
pub(crate) fn references(file: &SourceFile) -> Vec<Reference> {
    let source = std::fs::read_to_string(&file.path).unwrap();
    let tokens = tokenize(&source);
    let mut refs = Vec::new();
    // Inline modules (`mod tests { … }`) change what `super` means.
    let mut modules: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let here: Vec<String> = file
            .module
            .iter()
            .cloned()
            .chain(modules.iter().map(|m| m.0.clone()))
            .collect();
        let line = tokens[i].1;
        let mut found = Vec::new();
        match &tokens[i].0 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if modules.last().is_some_and(|m| m.1 == depth) {
                    modules.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(name), Some((Token::Punct('{'), _))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    modules.push((name.to_owned(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word) if word == "use" => {
                i += 1;
                use_tree(&tokens, &mut i, &[], &mut found);
            }
            Token::Ident(word)
                if ["crate", "super", "self"].contains(&word.as_str())
                    && tokens.get(i + 1).map(|t| &t.0) == Some(&Token::Path) =>
            {
                let mut path = vec![word.clone()];
                while let (Some((Token::Path, _)), Some(name)) =
                    (tokens.get(i + 1), ident(tokens.get(i + 2)))
                {
                    path.push(name.to_owned());
                    i += 2;
                }
                found.push(path);
            }
            _ => {}
        }
        for path in found {
            if let Some(to) = resolve(&here, &path) {
                refs.push(Reference {
                    from: here.clone(),
                    to,
                    file: file.path.clone(),
                    line,
                });
            }
        }
        i += 1;
    }
    refs
}
