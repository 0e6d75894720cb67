//! A small Go-template subset for files in the application's own format, in the syntax users
//! write for External Secrets Operator and Vault Secrets Operator: `{{ .password }}`,
//! `{{ index . "db/user" }}`, pipelines (`{{ .key | b64enc }}`), parentheses, `{{-`/`-}}`
//! trimming, and a fixed function set (see [`FUNCTIONS`]). No conditionals, loops or
//! variables. The data are secret values: an error names the template, the position and the
//! object, never a value.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::redact::Redacted;

/// The functions a template may call.
pub(crate) const FUNCTIONS: &[&str] = &[
    "index",
    "default",
    "print",
    "b64enc",
    "b64dec",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "quote",
    "replace",
    "toJson",
    "fromJson",
];

/// Where in a template, and what is wrong (never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} column {column}: {reason}")]
pub struct TemplateError {
    /// Line of the action (1-based).
    pub line: usize,
    /// Column of the action (1-based, in characters).
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Dot,
    /// `.a.b`: a chain of field names, with no space inside.
    Fields(Vec<String>),
    /// The same written right after `)`: it applies to the parenthesised value.
    Chain(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// An action and the offset of its `{{`.
    Action(Vec<Command>, usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Dot,
    Fields(Vec<String>),
    Str(String),
    Int(i64),
    Call(String),
    Group(Vec<Command>, Vec<String>),
}

type Command = Vec<Operand>;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    source: String,
    nodes: Vec<Node>,
}

/// A value while a template runs.
#[derive(Debug, Clone)]
enum Value {
    /// `.`: every object by name.
    Root,
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Int(i64),
    /// A name that is not there; an error when printed, not when given to `default`.
    Missing(String),
}

fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Template {
    /// Parses `source`.
    pub(crate) fn parse(source: &str) -> Result<Self, TemplateError> {
        let fail = |offset: usize, reason: String| {
            let (line, column) = position(source, offset);
            TemplateError {
                line,
                column,
                reason,
            }
        };
        let mut nodes = Vec::new();
        let mut rest = 0;
        let mut trim_next = false;
        while rest < source.len() {
            let Some(found) = source[rest..].find("{{") else {
                let mut text = &source[rest..];
                if trim_next {
                    text = text.trim_start();
                }
                nodes.push(Node::Text(text.to_owned()));
                break;
            };
            let open = rest + found;
            let mut text = &source[rest..open];
            if trim_next {
                text = text.trim_start();
            }
            let mut inner_start = open + 2;
            if source[inner_start..].starts_with("- ")
                || source[inner_start..].starts_with("-\t")
                || source[inner_start..].starts_with("-\n")
            {
                text = text.trim_end();
                inner_start += 1;
            }
            nodes.push(Node::Text(text.to_owned()));
            let close = find_close(source, inner_start)
                .ok_or_else(|| fail(open, "unclosed action: no }}".into()))?;
            let mut inner_end = close;
            trim_next = false;
            if source[..close].ends_with(" -")
                || source[..close].ends_with("\t-")
                || source[..close].ends_with("\n-")
            {
                inner_end -= 1;
                trim_next = true;
            }
            let tokens = lex(&source[inner_start..inner_end])
                .map_err(|(at, reason)| fail(inner_start + at, reason))?;
            let mut parser = Parser {
                tokens: &tokens,
                at: 0,
            };
            let pipeline = parser.pipeline().map_err(|reason| fail(open, reason))?;
            if parser.at != tokens.len() {
                return Err(fail(
                    open,
                    "unexpected ) or extra words in the action".into(),
                ));
            }
            if pipeline.is_empty() {
                return Err(fail(open, "empty action".into()));
            }
            nodes.push(Node::Action(pipeline, open));
            rest = close + 2;
        }
        nodes.retain(|n| !matches!(n, Node::Text(t) if t.is_empty()));
        Ok(Self {
            source: source.to_owned(),
            nodes,
        })
    }

    /// Renders with `data` (object name to value), refusing output past `max_bytes`.
    pub(crate) fn render(
        &self,
        data: &BTreeMap<String, Redacted<Vec<u8>>>,
        max_bytes: usize,
    ) -> Result<Redacted<Vec<u8>>, TemplateError> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let offset = match node {
                Node::Text(text) => {
                    out.extend_from_slice(text.as_bytes());
                    0
                }
                Node::Action(pipeline, offset) => {
                    let fail = |reason: String| {
                        let (line, column) = position(&self.source, *offset);
                        TemplateError {
                            line,
                            column,
                            reason,
                        }
                    };
                    let value = eval_pipeline(pipeline, data, max_bytes).map_err(fail)?;
                    out.extend(text(value, "printing").map_err(fail)?);
                    *offset
                }
            };
            if out.len() > max_bytes {
                let (line, column) = position(&self.source, offset);
                return Err(TemplateError {
                    line,
                    column,
                    reason: format!("output is larger than {max_bytes} bytes"),
                });
            }
        }
        Ok(Redacted::new(out))
    }
}

/// The `}}` closing an action that starts at `from`, skipping quoted strings.
fn find_close(source: &str, from: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == b'\\' && q == b'"' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'`' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

fn lex(text: &str) -> Result<Vec<Token>, (usize, String)> {
    let mut tokens = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '.' => {
                let after_group = i > 0 && chars[i - 1].1 == ')';
                let mut fields = Vec::new();
                while i < chars.len() && chars[i].1 == '.' {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && ident(chars[end].1) {
                        end += 1;
                    }
                    if end == start {
                        break;
                    }
                    fields.push(chars[start..end].iter().map(|(_, c)| c).collect::<String>());
                    i = end;
                }
                if fields.is_empty() {
                    tokens.push(Token::Dot);
                    i += 1;
                } else if after_group {
                    tokens.push(Token::Chain(fields));
                } else {
                    tokens.push(Token::Fields(fields));
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err((at, "unterminated string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&(_, e)) = chars.get(i) else {
                                return Err((at, "unterminated string".into()));
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                other => {
                                    return Err((
                                        at,
                                        format!("unknown escape \\{other} in a string"),
                                    ));
                                }
                            });
                        }
                        c => s.push(c),
                    }
                }
                tokens.push(Token::Str(s));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|(_, c)| *c == '`')
                    .map(|p| start + p)
                    .ok_or((at, "unterminated raw string".to_owned()))?;
                tokens.push(Token::Str(
                    chars[start..end].iter().map(|(_, c)| c).collect(),
                ));
                i = end + 1;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].1.is_ascii_digit() {
                    i += 1;
                }
                let text: String = chars[start..i].iter().map(|(_, c)| c).collect();
                tokens.push(Token::Int(
                    text.parse()
                        .map_err(|_| (at, format!("{text:?} is not a number")))?,
                ));
            }
            c if ident(c) => {
                let start = i;
                while i < chars.len() && ident(chars[i].1) {
                    i += 1;
                }
                tokens.push(Token::Ident(
                    chars[start..i].iter().map(|(_, c)| c).collect(),
                ));
            }
            other => return Err((at, format!("unexpected character {other:?}"))),
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn pipeline(&mut self) -> Result<Vec<Command>, String> {
        let mut commands = vec![self.command()?];
        while self.tokens.get(self.at) == Some(&Token::Pipe) {
            self.at += 1;
            commands.push(self.command()?);
        }
        Ok(commands)
    }

    fn command(&mut self) -> Result<Command, String> {
        let mut operands = Vec::new();
        while let Some(token) = self.tokens.get(self.at) {
            let operand = match token {
                Token::Pipe | Token::Close => break,
                Token::Dot => Operand::Dot,
                Token::Fields(fields) => Operand::Fields(fields.clone()),
                Token::Chain(_) => return Err("a field chain must follow a value".into()),
                Token::Str(s) => Operand::Str(s.clone()),
                Token::Int(n) => Operand::Int(*n),
                Token::Ident(name) => {
                    if !FUNCTIONS.contains(&name.as_str()) {
                        return Err(format!(
                            "unknown function {name:?} (known: {})",
                            FUNCTIONS.join(", ")
                        ));
                    }
                    if !operands.is_empty() {
                        return Err(format!(
                            "function {name:?} used as an argument; put it in parentheses"
                        ));
                    }
                    Operand::Call(name.clone())
                }
                Token::Open => {
                    self.at += 1;
                    let inner = self.pipeline()?;
                    if self.tokens.get(self.at) != Some(&Token::Close) {
                        return Err("missing )".into());
                    }
                    self.at += 1;
                    let fields = match self.tokens.get(self.at) {
                        Some(Token::Chain(fields)) => {
                            self.at += 1;
                            fields.clone()
                        }
                        _ => Vec::new(),
                    };
                    operands.push(Operand::Group(inner, fields));
                    continue;
                }
            };
            self.at += 1;
            operands.push(operand);
        }
        if operands.is_empty() {
            return Err("empty command".into());
        }
        if !matches!(operands[0], Operand::Call(_)) && operands.len() > 1 {
            return Err("a value cannot take arguments; did you mean a function?".into());
        }
        Ok(operands)
    }
}

fn eval_pipeline(
    pipeline: &[Command],
    data: &BTreeMap<String, Redacted<Vec<u8>>>,
    max: usize,
) -> Result<Value, String> {
    let mut piped: Option<Value> = None;
    for command in pipeline {
        let mut args = Vec::new();
        for operand in &command[1..] {
            args.push(eval_operand(operand, data, max)?);
        }
        let value = match &command[0] {
            Operand::Call(name) => {
                args.extend(piped.take());
                call(name, args, data, max)?
            }
            other => {
                if piped.is_some() {
                    return Err("only a function can follow |".into());
                }
                eval_operand(other, data, max)?
            }
        };
        piped = Some(value);
    }
    piped.ok_or_else(|| "empty action".into())
}

fn eval_operand(
    operand: &Operand,
    data: &BTreeMap<String, Redacted<Vec<u8>>>,
    max: usize,
) -> Result<Value, String> {
    Ok(match operand {
        Operand::Dot => Value::Root,
        Operand::Str(s) => Value::Bytes(s.as_bytes().to_vec()),
        Operand::Int(n) => Value::Int(*n),
        Operand::Fields(fields) => fields
            .iter()
            .try_fold(Value::Root, |v, f| lookup(v, f, data))?,
        Operand::Group(inner, fields) => {
            let v = eval_pipeline(inner, data, max)?;
            fields.iter().try_fold(v, |v, f| lookup(v, f, data))?
        }
        Operand::Call(name) => call(name, Vec::new(), data, max)?,
    })
}

fn lookup(
    value: Value,
    key: &str,
    data: &BTreeMap<String, Redacted<Vec<u8>>>,
) -> Result<Value, String> {
    match value {
        Value::Root => Ok(data.get(key).map_or_else(
            || Value::Missing(key.to_owned()),
            |v| Value::Bytes(v.expose().clone()),
        )),
        Value::Json(serde_json::Value::Object(map)) => Ok(map
            .get(key)
            .cloned()
            .map_or_else(|| Value::Missing(key.to_owned()), Value::Json)),
        Value::Missing(name) => Ok(Value::Missing(name)),
        _ => Err(format!(
            "cannot look up {key:?}: not an object (use fromJson on JSON text)"
        )),
    }
}

fn text(value: Value, function: &str) -> Result<Vec<u8>, String> {
    match value {
        Value::Bytes(b) => Ok(b),
        Value::Json(serde_json::Value::String(s)) => Ok(s.into_bytes()),
        Value::Json(other) => Ok(other.to_string().into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        Value::Missing(name) => Err(format!("no object or key {name:?}")),
        Value::Root => Err(format!("{function} needs a value, not the whole data (.)")),
    }
}

fn utf8(bytes: Vec<u8>, function: &str) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{function}: the value is not UTF-8 text"))
}

/// Calls function `name`; a result of more than `max` bytes is refused, and `print` and
/// `replace` refuse before they build one (a class author must not make the node allocate
/// without bound: a template is short, its inputs can be megabytes).
fn call(
    name: &str,
    args: Vec<Value>,
    data: &BTreeMap<String, Redacted<Vec<u8>>>,
    max: usize,
) -> Result<Value, String> {
    let value = call_unbounded(name, args, data, max)?;
    if let Value::Bytes(b) = &value
        && b.len() > max
    {
        return Err(format!("{name}: the result is larger than {max} bytes"));
    }
    Ok(value)
}

fn call_unbounded(
    name: &str,
    mut args: Vec<Value>,
    data: &BTreeMap<String, Redacted<Vec<u8>>>,
    max: usize,
) -> Result<Value, String> {
    let arity = |n: usize, args: &[Value]| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{name} takes {n} argument(s), got {}", args.len()))
        }
    };
    match name {
        "index" => {
            if args.len() < 2 {
                return Err("index takes a value and at least one key".into());
            }
            let mut value = args.remove(0);
            for key in args {
                value = match (value, key) {
                    (Value::Json(serde_json::Value::Array(items)), Value::Int(i)) => {
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| items.get(i).cloned())
                            .map_or(Value::Missing(format!("[{i}]")), Value::Json)
                    }
                    (v @ (Value::Root | Value::Json(_) | Value::Missing(_)), k) => {
                        let k = utf8(text(k, "index")?, "index")?;
                        lookup(v, &k, data)?
                    }
                    (_, _) => {
                        return Err(
                            "index: cannot look up a key in a text value (use fromJson first)"
                                .into(),
                        );
                    }
                };
            }
            Ok(value)
        }
        "default" => {
            arity(2, &args)?;
            let given = args.pop().expect("two");
            let empty = match &given {
                Value::Missing(_) => true,
                Value::Bytes(b) => b.is_empty(),
                Value::Json(serde_json::Value::Null) => true,
                Value::Json(serde_json::Value::String(s)) => s.is_empty(),
                _ => false,
            };
            Ok(if empty {
                args.pop().expect("two")
            } else {
                given
            })
        }
        "print" => {
            let mut out = Vec::new();
            for arg in args {
                out.extend(text(arg, name)?);
                if out.len() > max {
                    return Err(format!("print: the result is larger than {max} bytes"));
                }
            }
            Ok(Value::Bytes(out))
        }
        "b64enc" => {
            arity(1, &args)?;
            let b = text(args.remove(0), name)?;
            Ok(Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .into_bytes(),
            ))
        }
        "b64dec" => {
            arity(1, &args)?;
            let b = text(args.remove(0), name)?;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim_ascii())
                .map(Value::Bytes)
                .map_err(|_| "b64dec: the value is not base64".into())
        }
        "trim" | "upper" | "lower" => {
            arity(1, &args)?;
            let b = text(args.remove(0), name)?;
            Ok(Value::Bytes(match name {
                "trim" => b.trim_ascii().to_vec(),
                "upper" => b.to_ascii_uppercase(),
                _ => b.to_ascii_lowercase(),
            }))
        }
        "trimPrefix" | "trimSuffix" => {
            arity(2, &args)?;
            let s = text(args.pop().expect("two"), name)?;
            let affix = text(args.pop().expect("two"), name)?;
            let cut = if name == "trimPrefix" {
                s.strip_prefix(affix.as_slice())
            } else {
                s.strip_suffix(affix.as_slice())
            };
            Ok(Value::Bytes(cut.map_or_else(|| s.clone(), <[u8]>::to_vec)))
        }
        "replace" => {
            arity(3, &args)?;
            let s = utf8(text(args.pop().expect("three"), name)?, name)?;
            let new = utf8(text(args.pop().expect("three"), name)?, name)?;
            let old = utf8(text(args.pop().expect("three"), name)?, name)?;
            if old.is_empty() {
                return Err("replace: the text to replace is empty".into());
            }
            let count = s.matches(old.as_str()).count();
            let size =
                (s.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
            if size > max {
                return Err(format!(
                    "replace: the result would be larger than {max} bytes"
                ));
            }
            Ok(Value::Bytes(s.replace(&old, &new).into_bytes()))
        }
        "quote" | "toJson" => {
            arity(1, &args)?;
            let json = match args.remove(0) {
                Value::Json(v) => v,
                Value::Int(n) => serde_json::Value::from(n),
                other => serde_json::Value::String(utf8(text(other, name)?, name)?),
            };
            Ok(Value::Bytes(json.to_string().into_bytes()))
        }
        "fromJson" => {
            arity(1, &args)?;
            let b = text(args.remove(0), name)?;
            serde_json::from_slice(&b)
                .map(Value::Json)
                .map_err(|e| format!("fromJson: {}", crate::redact::describe_json_error(&e)))
        }
        other => Err(format!("unknown function {other:?}")),
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
