//! The xl.cfg(5) grammar (see the [parent module](super) for the grammar and its decisions),
//! parsed with winnow into [`XlConfig`].

use std::collections::HashMap;
use std::fmt;

use winnow::combinator::opt;
use winnow::error::{ErrMode, ParserError};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location as _};
use winnow::token::{any, one_of, take_till, take_while};

use super::{ConfigError, ErrorKind, Location};

/// Deepest list nesting accepted (`[[…]]` is depth 2).
pub const MAX_LIST_DEPTH: usize = 32;

/// A value as written: a string, a number or a list, and where it starts.
///
/// Equality compares the values only, not where they were written.
#[derive(Clone, Debug)]
pub struct Value {
    /// The value.
    pub kind: ValueKind,
    /// Where it starts (the opening quote of a string, the `[` of a list).
    pub at: Location,
    /// A string written without escapes, so that byte `n` of its text is at column `at + 1 + n`
    /// (in characters).
    verbatim: bool,
}

/// The three kinds of value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `"…"` or `'…'`, escapes resolved.
    String(String),
    /// A number.
    Number(u64),
    /// `[ v, v, … ]`.
    List(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for Value {}

impl Value {
    /// A value written at `at` (for values built in code, e.g. by tests or tools).
    pub fn new(kind: ValueKind, at: Location) -> Self {
        Self { kind, at, verbatim: false }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            ValueKind::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<u64> {
        match self.kind {
            ValueKind::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match &self.kind {
            ValueKind::List(items) => Some(items),
            _ => None,
        }
    }

    /// What kind of value this is, for messages: "a string", "a number" or "a list".
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ValueKind::String(_) => "a string",
            ValueKind::Number(_) => "a number",
            ValueKind::List(_) => "a list",
        }
    }

    /// Where byte `offset` of this string's text was written: exact for a string written on one
    /// line without escapes, the string's opening quote otherwise.
    pub fn location_in_string(&self, offset: usize) -> Location {
        match &self.kind {
            ValueKind::String(s) if self.verbatim => {
                let mut offset = offset.min(s.len());
                while !s.is_char_boundary(offset) {
                    offset -= 1;
                }
                self.at.plus_columns(1 + s[..offset].chars().count())
            }
            _ => self.at,
        }
    }
}

impl fmt::Display for Value {
    /// xl syntax that parses back to an equal value: strings in double quotes with escapes,
    /// numbers in decimal, lists on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ValueKind::String(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        c if u32::from(c) < 0x20 || c == '\x7f' => write!(f, "\\x{:02x}", u32::from(c))?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            ValueKind::Number(n) => write!(f, "{n}"),
            ValueKind::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    f.write_str(if i == 0 { " " } else { ", " })?;
                    write!(f, "{item}")?;
                }
                f.write_str(if items.is_empty() { "]" } else { " ]" })
            }
        }
    }
}

/// One key's value after every assignment to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// Where the key was last assigned (with `=` or `+=`).
    pub at: Location,
    /// Its value.
    pub value: Value,
}

impl Setting {
    /// A later `key = value` or `key += value` of this key (see the [grammar](super)).
    fn assign(&mut self, s: Statement) {
        self.at = s.at;
        if !s.append {
            self.value = s.value;
            return;
        }
        let before = std::mem::replace(&mut self.value.kind, ValueKind::Number(0));
        self.value.kind = match (before, s.value.kind) {
            (ValueKind::List(mut items), ValueKind::List(more)) => {
                items.extend(more);
                ValueKind::List(items)
            }
            (ValueKind::List(mut items), atom) => {
                items.push(Value { kind: atom, ..s.value });
                ValueKind::List(items)
            }
            (ValueKind::String(mut a), ValueKind::String(b)) => {
                a.push_str(&b);
                self.value.verbatim = false;
                ValueKind::String(a)
            }
            (old, new) => {
                let mut items = vec![Value { kind: old, ..self.value.clone() }];
                match new {
                    ValueKind::List(more) => items.extend(more),
                    atom => items.push(Value { kind: atom, ..s.value }),
                }
                self.value.verbatim = false;
                ValueKind::List(items)
            }
        };
    }
}

/// A parsed xl config: every key once, in the order keys first appear, holding its final value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlConfig {
    file: String,
    settings: Vec<Setting>,
}

impl XlConfig {
    /// Parses `text` in the xl.cfg grammar; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let statements = statements(text).map_err(|e| ConfigError {
            file: file.to_string(),
            at: Location::of_offset(text, e.offset),
            kind: ErrorKind::Syntax {
                expected: e.expected,
                found: e.found.unwrap_or_else(|| found_at(text, e.offset)),
            },
        })?;
        let mut config = Self { file: file.to_string(), settings: Vec::new() };
        let mut index: HashMap<String, usize> = HashMap::new();
        for s in statements {
            if let Some(setting) = index.get(&s.key).and_then(|&i| config.settings.get_mut(i)) {
                setting.assign(s);
            } else {
                index.insert(s.key.clone(), config.settings.len());
                config.settings.push(Setting { key: s.key, at: s.at, value: s.value });
            }
        }
        Ok(config)
    }

    /// The file name errors and warnings use.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every setting, in the order keys first appear.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The setting of `key`, if assigned.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// An error at `at` in this file.
    pub fn error(&self, at: Location, kind: ErrorKind) -> ConfigError {
        ConfigError { file: self.file.clone(), at, kind }
    }
}

impl fmt::Display for XlConfig {
    /// One `key = value` line per setting; parses back to the same keys and values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.settings {
            writeln!(f, "{} = {}", s.key, s.value)?;
        }
        Ok(())
    }
}

/// What was found at a byte offset, for messages.
fn found_at(text: &str, offset: usize) -> String {
    match text.get(offset..).and_then(|rest| rest.chars().next()) {
        None => "end of file".into(),
        Some('\n') => "end of line".into(),
        Some(c) => format!("{:?}", c),
    }
}

// ---- the parser -------------------------------------------------------------------------------

type Input<'a> = LocatingSlice<&'a str>;

/// A syntax error: the byte offset where it is, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SyntaxError {
    offset: usize,
    expected: String,
    /// What was found, when more telling than the character at `offset` (a whole token).
    found: Option<String>,
}

impl<'a> ParserError<Input<'a>> for SyntaxError {
    type Inner = Self;

    fn from_input(input: &Input<'a>) -> Self {
        Self { offset: input.current_token_start(), expected: "valid xl.cfg syntax".into(), found: None }
    }

    fn into_inner(self) -> Result<Self, Self> {
        Ok(self)
    }
}

type PResult<T> = winnow::ModalResult<T, SyntaxError>;

fn fail<T>(offset: usize, expected: impl Into<String>) -> PResult<T> {
    Err(ErrMode::Cut(SyntaxError { offset, expected: expected.into(), found: None }))
}

/// Like [`fail`], naming the token found (in backquotes).
fn fail_token<T>(offset: usize, expected: impl Into<String>, token: &str) -> PResult<T> {
    Err(ErrMode::Cut(SyntaxError { offset, expected: expected.into(), found: Some(format!("`{token}`")) }))
}

fn unwrap_mode(e: ErrMode<SyntaxError>) -> SyntaxError {
    match e {
        ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
        // Only partial streams report Incomplete; ours is complete.
        ErrMode::Incomplete(_) => SyntaxError { offset: usize::MAX, expected: "more input".into(), found: None },
    }
}

struct Statement {
    key: String,
    at: Location,
    append: bool,
    value: Value,
}

const KEY_EXPECTED: &str =
    "a key (a lowercase letter, then lowercase letters, digits, '.' or '_'), a comment or the end of the line";
const VALUE_EXPECTED: &str = "a value: a string (\"…\" or '…'), a number or a list ([…])";

/// Spaces and tabs (and `\r`, so CRLF files read like LF files).
fn blanks(i: &mut Input<'_>) -> PResult<()> {
    take_while(0.., [' ', '\t', '\r']).void().parse_next(i)
}

/// Blanks, then an optional comment up to (not including) the end of the line.
fn blanks_and_comment(i: &mut Input<'_>) -> PResult<()> {
    blanks(i)?;
    opt(('#', take_till(0.., '\n'))).void().parse_next(i)
}

/// Blanks, comments and newlines (inside lists).
fn nlok(i: &mut Input<'_>) -> PResult<()> {
    loop {
        blanks_and_comment(i)?;
        if opt('\n').parse_next(i)?.is_none() {
            return Ok(());
        }
    }
}

fn statements(text: &str) -> Result<Vec<Statement>, SyntaxError> {
    let mut input = LocatingSlice::new(text);
    let i = &mut input;
    let mut out = Vec::new();
    let mut lines = LineIndex::new(text);
    loop {
        blanks_and_comment(i).map_err(unwrap_mode)?;
        match i.peek_token() {
            None => return Ok(out),
            Some('\n' | ';') => {
                let _ = i.next_token();
            }
            Some(c) if c.is_ascii_lowercase() => out.push(statement(i, &mut lines).map_err(unwrap_mode)?),
            Some(_) => {
                return Err(SyntaxError {
                    offset: i.current_token_start(),
                    expected: KEY_EXPECTED.into(),
                    found: None,
                });
            }
        }
    }
}

fn statement(i: &mut Input<'_>, lines: &mut LineIndex<'_>) -> PResult<Statement> {
    // Locations are looked up in increasing offset order, which keeps `LineIndex` linear.
    let at = lines.location(i.current_token_start());
    let key: &str = (one_of(|c: char| c.is_ascii_lowercase()), take_while(0.., ('a'..='z', '0'..='9', '.', '_')))
        .take()
        .parse_next(i)?;
    blanks(i)?;
    let append = if opt("+=").parse_next(i)?.is_some() {
        true
    } else if opt('=').parse_next(i)?.is_some() {
        false
    } else {
        return fail(i.current_token_start(), format!("'=' or '+=' after the key `{key}`"));
    };
    blanks(i)?;
    let value = value(i, lines, 0, VALUE_EXPECTED)?;
    blanks_and_comment(i)?;
    match i.peek_token() {
        None => {}
        Some('\n' | ';') => {
            let _ = i.next_token();
        }
        Some(_) => {
            return fail(
                i.current_token_start(),
                format!("';', a comment or the end of the line after the value of `{key}`"),
            );
        }
    }
    Ok(Statement { key: key.to_string(), at, append, value })
}

fn value(i: &mut Input<'_>, lines: &mut LineIndex<'_>, depth: usize, expected: &str) -> PResult<Value> {
    let offset = i.current_token_start();
    let at = lines.location(offset);
    match i.peek_token() {
        Some(q @ ('"' | '\'')) => {
            let (s, verbatim) = string(i, q, at)?;
            Ok(Value { kind: ValueKind::String(s), at, verbatim })
        }
        Some(c) if c.is_ascii_digit() => Ok(Value { kind: ValueKind::Number(number(i)?), at, verbatim: false }),
        Some('[') => {
            if depth >= MAX_LIST_DEPTH {
                return fail(offset, format!("at most {MAX_LIST_DEPTH} levels of nested lists"));
            }
            let items = list(i, lines, depth + 1, at)?;
            Ok(Value { kind: ValueKind::List(items), at, verbatim: false })
        }
        _ => fail(offset, expected),
    }
}

/// A quoted string on one line; returns its text and whether it had no escapes.
fn string(i: &mut Input<'_>, quote: char, at: Location) -> PResult<(String, bool)> {
    any.parse_next(i)?;
    let mut text = String::new();
    let mut verbatim = true;
    loop {
        let chunk: &str = take_till(0.., |c| c == quote || c == '\\' || c == '\n').parse_next(i)?;
        text.push_str(chunk);
        match i.peek_token() {
            Some('\\') => {
                verbatim = false;
                text.push(escape(i)?);
            }
            Some(c) if c == quote => {
                let _ = i.next_token();
                return Ok((text, verbatim));
            }
            _ => {
                return fail(
                    i.current_token_start(),
                    format!("{quote} to close the string that starts at {at} (strings end on the line they start)"),
                );
            }
        }
    }
}

/// A backslash escape, the backslash included.
fn escape(i: &mut Input<'_>) -> PResult<char> {
    const EXPECTED: &str = "an escape after '\\': one of \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v, \\x and two \
                            hex digits, or one to three octal digits (at most \\377)";
    any.parse_next(i)?;
    let offset = i.current_token_start();
    let Some(c) = i.next_token() else {
        return fail(offset, EXPECTED);
    };
    Ok(match c {
        '"' | '\'' | '\\' => c,
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        'x' => {
            let digits_at = i.current_token_start();
            let digits: &str = take_while(0..=2, |c: char| c.is_ascii_hexdigit()).parse_next(i)?;
            match u8::from_str_radix(digits, 16) {
                Ok(b) if digits.len() == 2 => char::from(b),
                _ => return fail(digits_at + digits.len(), "two hex digits after '\\x'"),
            }
        }
        '0'..='7' => {
            let more: &str = take_while(0..=2, |c: char| ('0'..='7').contains(&c)).parse_next(i)?;
            let mut digits = String::from(c);
            digits.push_str(more);
            match u8::from_str_radix(&digits, 8) {
                Ok(b) => char::from(b),
                Err(_) => return fail_token(offset - 1, "an octal escape at most \\377", &format!("\\{digits}")),
            }
        }
        _ => return fail(offset, EXPECTED),
    })
}

/// A number: the xl token `[0-9][0-9a-fx]*`, read as decimal or as `0x` hex.
fn number(i: &mut Input<'_>) -> PResult<u64> {
    const EXPECTED: &str = "a number: decimal digits, or 0x and lowercase hex digits";
    let offset = i.current_token_start();
    // Take the whole word (letters, digits, '_') so a malformed number is reported as one token.
    let word: &str = take_while(1.., |c: char| c.is_ascii_alphanumeric() || c == '_').parse_next(i)?;
    let hex = word.strip_prefix("0x");
    let well_formed = match hex {
        Some(h) => !h.is_empty() && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        None => word.chars().all(|c| c.is_ascii_digit()),
    };
    if !well_formed {
        return fail_token(offset, EXPECTED, word);
    }
    if hex.is_none() && word.len() > 1 && word.starts_with('0') {
        return fail_token(
            offset,
            "a decimal number without leading zeros (xl would read this as octal: write it in decimal or 0x hex)",
            word,
        );
    }
    let parsed = match hex {
        Some(h) => u64::from_str_radix(h, 16),
        None => word.parse::<u64>(),
    };
    match parsed {
        Ok(n) => Ok(n),
        Err(_) => fail_token(offset, format!("a number at most {} (0xffffffffffffffff)", u64::MAX), word),
    }
}

fn list(i: &mut Input<'_>, lines: &mut LineIndex<'_>, depth: usize, at: Location) -> PResult<Vec<Value>> {
    any.parse_next(i)?;
    let mut items = Vec::new();
    let item_expected = format!("a value or ']' to close the list that starts at {at}");
    nlok(i)?;
    if opt(']').parse_next(i)?.is_some() {
        return Ok(items);
    }
    loop {
        items.push(value(i, lines, depth, &item_expected)?);
        nlok(i)?;
        if opt(']').parse_next(i)?.is_some() {
            return Ok(items);
        }
        if opt(',').parse_next(i)?.is_none() {
            return fail(i.current_token_start(), format!("',' or ']' in the list that starts at {at}"));
        }
        nlok(i)?;
        if opt(']').parse_next(i)?.is_some() {
            return Ok(items);
        }
    }
}

/// Byte offset → location, remembering the last lookup so a forward scan stays linear.
struct LineIndex<'a> {
    text: &'a str,
    offset: usize,
    at: Location,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, offset: 0, at: Location::START }
    }

    fn location(&mut self, offset: usize) -> Location {
        if offset < self.offset || !self.text.is_char_boundary(offset) || offset > self.text.len() {
            return Location::of_offset(self.text, offset);
        }
        for c in self.text[self.offset..offset].chars() {
            if c == '\n' {
                self.at = Location::new(self.at.line.saturating_add(1), 1);
            } else {
                self.at = self.at.plus_columns(1);
            }
        }
        self.offset = offset;
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> XlConfig {
        XlConfig::parse("t.cfg", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        XlConfig::parse("t.cfg", text).map(|c| format!("parsed: {c}")).unwrap_or_else(|e| e.to_string())
    }

    fn num(n: u64) -> Value {
        Value::new(ValueKind::Number(n), Location::START)
    }

    fn s(text: &str) -> Value {
        Value::new(ValueKind::String(text.into()), Location::START)
    }

    fn l(items: Vec<Value>) -> Value {
        Value::new(ValueKind::List(items), Location::START)
    }

    #[test]
    fn values_of_every_kind() {
        let c = parse("a = 1\nb = 0x1f0\nc = \"x\"\nd = 'y'\ne = [ 1, \"two\", [3] ]\nf = []\n");
        assert_eq!(c.get("a").map(|s| &s.value), Some(&num(1)));
        assert_eq!(c.get("b").map(|s| &s.value), Some(&num(0x1f0)));
        assert_eq!(c.get("c").map(|s| &s.value), Some(&s("x")));
        assert_eq!(c.get("d").map(|s| &s.value), Some(&s("y")));
        assert_eq!(c.get("e").map(|s| &s.value), Some(&l(vec![num(1), s("two"), l(vec![num(3)])])));
        assert_eq!(c.get("f").map(|s| &s.value), Some(&l(vec![])));
    }

    #[test]
    fn hex_must_be_lowercase() {
        assert_eq!(
            err("b = 0x1F0\n"),
            "t.cfg:1:5: expected a number: decimal digits, or 0x and lowercase hex digits, found `0x1F0`"
        );
        assert_eq!(parse("b = 0x1f0").get("b").map(|s| &s.value), Some(&num(0x1f0)));
    }

    #[test]
    fn escapes() {
        let c = parse(r#"a = "q\"\\\n\t\x41\101\7" ; b = 'it\'s'"#);
        assert_eq!(c.get("a").and_then(|s| s.value.as_str()), Some("q\"\\\n\tAA\x07"));
        assert_eq!(c.get("b").and_then(|s| s.value.as_str()), Some("it's"));
        assert_eq!(
            err(r#"a = "\q""#),
            "t.cfg:1:7: expected an escape after '\\': one of \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v, \\x and two \
             hex digits, or one to three octal digits (at most \\377), found 'q'"
        );
        assert_eq!(err(r#"a = "\x4""#), "t.cfg:1:9: expected two hex digits after '\\x', found '\"'");
        assert_eq!(err(r#"a = "\777""#), "t.cfg:1:6: expected an octal escape at most \\377, found `\\777`");
    }

    #[test]
    fn string_positions_map_back_to_columns() {
        let c = parse("  k = \"size=64,node=1\"\n");
        let v = &c.get("k").map(|s| s.value.clone()).unwrap_or_else(|| num(0));
        assert_eq!(v.at, Location::new(1, 7));
        assert_eq!(v.location_in_string(0), Location::new(1, 8));
        assert_eq!(v.location_in_string(13), Location::new(1, 21));
        let escaped = parse("k = \"a\\tb\"").get("k").map(|s| s.value.location_in_string(3));
        assert_eq!(escaped, Some(Location::new(1, 5)));
    }
}
