//! Protobuf text format (`.prototxt`) parsed into a generic tree of fields.
//!
//! The tree keeps every field in file order with its position, so that the typed
//! conversion in `netdef` can report `prototxt line L, column C` for a bad value.
//! Accepted beyond the strict grammar, as Caffe's own files need: `#` comments, single or
//! double quotes, `;` or `,` after a field, `name{`, `name: {`, `[a, b]` lists.

use anyhow::{anyhow, bail, Result};

/// Nesting deeper than this is refused: real nets nest 4 levels, and recursion on
/// hostile input must stay bounded.
const MAX_DEPTH: usize = 100;
/// Fields in the whole file: CaffeNet has about 300, the deepest ResNet a few thousand.
/// Each costs ~100 bytes of tree for as little as 3 bytes of text, so bound the tree.
const MAX_FIELDS: usize = 1 << 20;

/// A 1-based position in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "prototxt line {}, column {}", self.line, self.column)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    /// A quoted string; `text` holds it unescaped.
    Str,
    /// A bare identifier: an enum name, `true`/`false`, `inf`, `nan`.
    Ident,
    /// A number as written (`-1`, `1e-30`, `0.`, `0x1f`), checked to be numeric.
    Number,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub kind: ScalarKind,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Message(Message),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: Value,
    /// Where the value starts (for a message, its opening brace).
    pub pos: Pos,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub fields: Vec<Field>,
}

/// Parses a whole prototxt file into its top-level message.
pub fn parse(text: &str) -> Result<Message> {
    // Editors on Windows may leave a byte-order mark; it is not part of the text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser { lexer: Lexer::new(text), peeked: None, fields: 0 };
    parser.message(None, 0)
}

// ---------------------------------------------------------------------------------------
// Typed access

impl Message {
    /// Every occurrence of a field, in file order.
    pub fn get_all<'a: 'n, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a Field> + 'n {
        self.fields.iter().filter(move |f| f.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// The single occurrence of a non-repeated field; giving it twice is an error, as in
    /// protobuf itself.
    pub fn get(&self, name: &str) -> Result<Option<&Field>> {
        let mut found = self.get_all(name);
        let first = found.next();
        if let Some(second) = found.next() {
            bail!("{}: field '{name}' is given more than once", second.pos);
        }
        Ok(first)
    }

    pub fn get_msg(&self, name: &str) -> Result<Option<&Message>> {
        self.get(name)?.map(Field::as_msg).transpose()
    }

    pub fn get_msgs(&self, name: &str) -> Result<Vec<&Message>> {
        self.get_all(name).map(Field::as_msg).collect()
    }

    /// A quoted string.
    pub fn get_str(&self, name: &str) -> Result<Option<&str>> {
        self.get(name)?.map(Field::as_str).transpose()
    }

    pub fn get_strs(&self, name: &str) -> Result<Vec<&str>> {
        self.get_all(name).map(Field::as_str).collect()
    }

    /// An enum value name (a bare identifier).
    pub fn get_enum(&self, name: &str) -> Result<Option<&str>> {
        self.get(name)?.map(Field::as_enum).transpose()
    }

    pub fn get_f64(&self, name: &str) -> Result<Option<f64>> {
        self.get(name)?.map(Field::as_f64).transpose()
    }

    pub fn get_f32(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.get_f64(name)?.map(|v| v as f32))
    }

    pub fn get_f32s(&self, name: &str) -> Result<Vec<f32>> {
        self.get_all(name).map(|f| f.as_f64().map(|v| v as f32)).collect()
    }

    pub fn get_i64(&self, name: &str) -> Result<Option<i64>> {
        self.get(name)?.map(Field::as_i64).transpose()
    }

    pub fn get_i64s(&self, name: &str) -> Result<Vec<i64>> {
        self.get_all(name).map(Field::as_i64).collect()
    }

    pub fn get_usize(&self, name: &str) -> Result<Option<usize>> {
        self.get(name)?.map(Field::as_usize).transpose()
    }

    pub fn get_usizes(&self, name: &str) -> Result<Vec<usize>> {
        self.get_all(name).map(Field::as_usize).collect()
    }

    pub fn get_bool(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)?.map(Field::as_bool).transpose()
    }
}

impl Field {
    fn scalar(&self, expected: &str) -> Result<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Ok(s),
            Value::Message(_) => {
                bail!("{}: field '{}' expects {expected}, got a message", self.pos, self.name)
            }
        }
    }

    fn wrong(&self, expected: &str, got: &Scalar) -> anyhow::Error {
        let shown = match got.kind {
            ScalarKind::Str => format!("the string {:?}", got.text),
            ScalarKind::Ident | ScalarKind::Number => format!("'{}'", got.text),
        };
        anyhow!("{}: field '{}' expects {expected}, got {shown}", self.pos, self.name)
    }

    pub fn as_msg(&self) -> Result<&Message> {
        match &self.value {
            Value::Message(m) => Ok(m),
            Value::Scalar(s) => Err(self.wrong("a message in braces", s)),
        }
    }

    pub fn as_str(&self) -> Result<&str> {
        let s = self.scalar("a quoted string")?;
        match s.kind {
            ScalarKind::Str => Ok(&s.text),
            _ => Err(self.wrong("a quoted string", s)),
        }
    }

    pub fn as_enum(&self) -> Result<&str> {
        let s = self.scalar("an enum name")?;
        match s.kind {
            ScalarKind::Ident => Ok(&s.text),
            _ => Err(self.wrong("an enum name", s)),
        }
    }

    pub fn as_f64(&self) -> Result<f64> {
        let s = self.scalar("a number")?;
        let parsed = match s.kind {
            ScalarKind::Number => parse_float(&s.text).or_else(|| parse_float_word(&s.text)),
            ScalarKind::Ident => parse_float_word(&s.text),
            ScalarKind::Str => None,
        };
        parsed.ok_or_else(|| self.wrong("a number", s))
    }

    pub fn as_i64(&self) -> Result<i64> {
        let s = self.scalar("an integer")?;
        let parsed = match s.kind {
            ScalarKind::Number => parse_int(&s.text),
            _ => None,
        };
        parsed.ok_or_else(|| self.wrong("an integer", s))
    }

    pub fn as_usize(&self) -> Result<usize> {
        let s = self.scalar("a non-negative integer")?;
        let parsed = match s.kind {
            ScalarKind::Number => parse_int(&s.text).and_then(|v| usize::try_from(v).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| self.wrong("a non-negative integer", s))
    }

    pub fn as_bool(&self) -> Result<bool> {
        let s = self.scalar("true or false")?;
        let parsed = match (s.kind, s.text.as_str()) {
            (ScalarKind::Ident, "true" | "True" | "t") => Some(true),
            (ScalarKind::Ident, "false" | "False" | "f") => Some(false),
            (ScalarKind::Number, "1") => Some(true),
            (ScalarKind::Number, "0") => Some(false),
            _ => None,
        };
        parsed.ok_or_else(|| self.wrong("true or false", s))
    }
}

/// Integers as protobuf's tokenizer reads them: decimal, `0x` hex, leading-0 octal.
fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(octal) = digits.strip_prefix('0').filter(|rest| !rest.is_empty()) {
        u64::from_str_radix(octal, 8).ok()?
    } else {
        digits.parse::<u64>().ok()?
    };
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn parse_float(text: &str) -> Option<f64> {
    if let Some(v) = parse_int(text) {
        return Some(v as f64);
    }
    // A C-style `f` suffix is allowed on floats ("1.5f"); Rust's parser does not know it.
    let body = text.strip_suffix(['f', 'F']).unwrap_or(text);
    let unsigned = body.strip_prefix('-').unwrap_or(body);
    // Rust would also take words like "inf"; numbers must start with a digit or '.'.
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    body.parse::<f64>().ok()
}

fn parse_float_word(text: &str) -> Option<f64> {
    let (sign, word) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text),
    };
    match word.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Number(String),
    Str(String),
    /// One of `{ } < > [ ] : ; ,`.
    Punct(char),
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("'{s}'"),
            Token::Number(s) => format!("the number '{s}'"),
            Token::Str(s) => format!("the string {s:?}"),
            Token::Punct(c) => format!("'{c}'"),
            Token::End => "the end of the file".to_string(),
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { chars: text.chars().peekable(), line: 1, column: 1 }
    }

    fn pos(&self) -> Pos {
        Pos { line: self.line, column: self.column }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space_and_comments(&mut self) {
        while let Some(&c) = self.chars.peek() {
            if c == '#' {
                while self.chars.peek().is_some_and(|&c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// The next token and where it starts.
    fn next_token(&mut self) -> Result<(Token, Pos)> {
        self.skip_space_and_comments();
        let pos = self.pos();
        let Some(&c) = self.chars.peek() else {
            return Ok((Token::End, pos));
        };
        let token = match c {
            '{' | '}' | '<' | '>' | '[' | ']' | ':' | ';' | ',' => {
                self.bump();
                Token::Punct(c)
            }
            '"' | '\'' => Token::Str(self.string(pos)?),
            c if c.is_ascii_alphabetic() || c == '_' => Token::Ident(self.word()),
            c if c.is_ascii_digit() || c == '.' || c == '-' || c == '+' => self.number(pos)?,
            other => bail!("{pos}: unexpected character {other:?}"),
        };
        Ok((token, pos))
    }

    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                self.bump();
            } else {
                break;
            }
        }
        word
    }

    fn number(&mut self, pos: Pos) -> Result<Token> {
        let mut text = String::new();
        if let Some(&sign) = self.chars.peek().filter(|&&c| c == '-' || c == '+') {
            self.bump();
            self.skip_space_and_comments();
            if sign == '-' {
                text.push('-');
            }
        }
        // `-inf` and `-nan` are written as a sign before a word.
        if self.chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            let word = self.word();
            text.push_str(&word);
            return match parse_float_word(&text) {
                Some(_) => Ok(Token::Number(text)),
                None => bail!("{pos}: bad number '{text}'"),
            };
        }
        let mut previous = ' ';
        while let Some(&c) = self.chars.peek() {
            let exponent_sign = (c == '-' || c == '+') && (previous == 'e' || previous == 'E') && !text.contains(['x', 'X']);
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign {
                text.push(c);
                previous = c;
                self.bump();
            } else {
                break;
            }
        }
        match parse_float(&text) {
            Some(_) => Ok(Token::Number(text)),
            None => bail!("{pos}: bad number '{text}'"),
        }
    }

    fn string(&mut self, pos: Pos) -> Result<String> {
        let Some(quote) = self.bump() else {
            bail!("{pos}: expected a string");
        };
        let mut bytes = Vec::new();
        loop {
            let c = match self.bump() {
                None | Some('\n') => bail!("{pos}: unterminated string"),
                Some(c) => c,
            };
            if c == quote {
                break;
            }
            if c != '\\' {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let escape_pos = self.pos();
            let escaped = match self.bump() {
                None | Some('\n') => bail!("{pos}: unterminated string"),
                Some(e) => e,
            };
            let byte = match escaped {
                'n' => b'\n',
                't' => b'\t',
                'r' => b'\r',
                'a' => 0x07,
                'b' => 0x08,
                'f' => 0x0c,
                'v' => 0x0b,
                '\\' => b'\\',
                '\'' => b'\'',
                '"' => b'"',
                '?' => b'?',
                'x' | 'X' => self.escaped_number(16, 2, None, escape_pos)?,
                d @ '0'..='7' => self.escaped_number(8, 3, d.to_digit(8), escape_pos)?,
                other => bail!("{escape_pos}: unknown escape '\\{other}' in string"),
            };
            bytes.push(byte);
        }
        String::from_utf8(bytes).map_err(|_| anyhow!("{pos}: string is not valid UTF-8"))
    }

    /// Up to `max_digits` digits of `\x..` or `\NNN`; `first` is an already consumed digit.
    fn escaped_number(&mut self, radix: u32, max_digits: usize, first: Option<u32>, pos: Pos) -> Result<u8> {
        let mut value = first.unwrap_or(0);
        let mut count = usize::from(first.is_some());
        while count < max_digits {
            match self.chars.peek().and_then(|c| c.to_digit(radix)) {
                Some(d) => {
                    value = value * radix + d;
                    count += 1;
                    self.bump();
                }
                None => break,
            }
        }
        if count == 0 {
            bail!("{pos}: '\\x' escape without hex digits");
        }
        u8::try_from(value).map_err(|_| anyhow!("{pos}: escape value {value} is larger than a byte"))
    }
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Token, Pos)>,
    /// Fields parsed so far, against `MAX_FIELDS`.
    fields: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&(Token, Pos)> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        match &self.peeked {
            Some(t) => Ok(t),
            None => bail!("prototxt: internal lexer state"),
        }
    }

    fn next(&mut self) -> Result<(Token, Pos)> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn push(&mut self, message: &mut Message, field: Field) -> Result<()> {
        self.fields += 1;
        if self.fields > MAX_FIELDS {
            bail!("{}: more than {MAX_FIELDS} fields", field.pos);
        }
        message.fields.push(field);
        Ok(())
    }

    fn eat_punct(&mut self, c: char) -> Result<bool> {
        if self.peek()?.0 == Token::Punct(c) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Fields until `close` (or the end of the file for the top level).
    /// Fields until the brace that closes `open` (or the end of the file at the top level).
    fn message(&mut self, open: Option<(char, Pos)>, depth: usize) -> Result<Message> {
        let close = open.map(|(c, _)| if c == '{' { '}' } else { '>' });
        let mut message = Message::default();
        loop {
            let (token, pos) = self.next()?;
            let name = match (token, open, close) {
                (Token::End, None, _) => return Ok(message),
                (Token::End, Some((open, open_pos)), Some(close)) => {
                    let Pos { line, column } = open_pos;
                    bail!("{pos}: expected '{close}' to close the '{open}' of line {line}, column {column}, found the end of the file");
                }
                (Token::Punct(c), _, Some(close)) if c == close => return Ok(message),
                (Token::Ident(name), _, _) => name,
                (other, _, close) => {
                    let wanted = match close {
                        Some(c) => format!("a field name or '{c}'"),
                        None => "a field name".to_string(),
                    };
                    bail!("{pos}: expected {wanted}, found {}", other.describe());
                }
            };
            let colon = self.eat_punct(':')?;
            let (next, next_pos) = self.peek()?.clone();
            match next {
                Token::Punct('[') if colon => {
                    self.next()?;
                    self.list(&name, &mut message, depth)?;
                }
                Token::Punct(open @ ('{' | '<')) => {
                    self.next()?;
                    let value = self.nested(open, next_pos, depth)?;
                    self.push(&mut message, Field { name, value, pos: next_pos })?;
                }
                _ if colon => {
                    let (scalar, pos) = self.scalar()?;
                    self.push(&mut message, Field { name, value: Value::Scalar(scalar), pos })?;
                }
                other => bail!("{next_pos}: expected ':' or '{{' after '{name}', found {}", other.describe()),
            }
            // Caffe's files sometimes end a field with ';' or ','.
            if !self.eat_punct(';')? {
                self.eat_punct(',')?;
            }
        }
    }

    fn nested(&mut self, open: char, pos: Pos, depth: usize) -> Result<Value> {
        if depth + 1 >= MAX_DEPTH {
            bail!("{pos}: messages nested more than {MAX_DEPTH} deep");
        }
        Ok(Value::Message(self.message(Some((open, pos)), depth + 1)?))
    }

    /// `[v, v, ...]`: the repeated-field shorthand; each element becomes its own field.
    fn list(&mut self, name: &str, message: &mut Message, depth: usize) -> Result<()> {
        if self.eat_punct(']')? {
            return Ok(());
        }
        loop {
            let (token, pos) = self.peek()?.clone();
            let value = match token {
                Token::Punct(open @ ('{' | '<')) => {
                    self.next()?;
                    self.nested(open, pos, depth)?
                }
                _ => Value::Scalar(self.scalar()?.0),
            };
            self.push(message, Field { name: name.to_string(), value, pos })?;
            let (token, pos) = self.next()?;
            match token {
                Token::Punct(',') => {}
                Token::Punct(']') => return Ok(()),
                other => bail!("{pos}: expected ',' or ']' in a list, found {}", other.describe()),
            }
        }
    }

    fn scalar(&mut self) -> Result<(Scalar, Pos)> {
        let (token, pos) = self.next()?;
        let scalar = match token {
            Token::Number(text) => Scalar { kind: ScalarKind::Number, text },
            Token::Ident(text) => Scalar { kind: ScalarKind::Ident, text },
            Token::Str(mut text) => {
                // Adjacent strings concatenate, as in C.
                while let Token::Str(more) = &self.peek()?.0 {
                    text.push_str(more);
                    self.next()?;
                }
                Scalar { kind: ScalarKind::Str, text }
            }
            other => bail!("{pos}: expected a value, found {}", other.describe()),
        };
        Ok((scalar, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("expected an error for {text:?}, got {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn scalars_of_each_kind() {
        let m = parse("a: 1 b: -2.5e-3 c: \"x y\" d: FOO e: true f: 'q' g: 0. h: inf i: -inf j: 1e-30").unwrap();
        assert_eq!(m.get_usize("a").unwrap(), Some(1));
        assert_eq!(m.get_f64("b").unwrap(), Some(-2.5e-3));
        assert_eq!(m.get_str("c").unwrap(), Some("x y"));
        assert_eq!(m.get_enum("d").unwrap(), Some("FOO"));
        assert_eq!(m.get_bool("e").unwrap(), Some(true));
        assert_eq!(m.get_str("f").unwrap(), Some("q"));
        assert_eq!(m.get_f64("g").unwrap(), Some(0.0));
        assert_eq!(m.get_f64("h").unwrap(), Some(f64::INFINITY));
        assert_eq!(m.get_f64("i").unwrap(), Some(f64::NEG_INFINITY));
        assert_eq!(m.get_f32("j").unwrap(), Some(1e-30));
        assert_eq!(m.get_usize("missing").unwrap(), None);
        assert_eq!(m.get_i64("a").unwrap(), Some(1));
    }

    #[test]
    fn integer_forms() {
        let m = parse("\u{feff}a: 0x1F b: -7 c: 017 d: 0 e: 1.5").unwrap();
        assert_eq!(m.get_i64("a").unwrap(), Some(31));
        assert_eq!(m.get_i64("b").unwrap(), Some(-7));
        assert_eq!(m.get_i64("c").unwrap(), Some(15));
        assert_eq!(m.get_usize("d").unwrap(), Some(0));
        assert!(m.get_usize("b").unwrap_err().to_string().contains("non-negative integer, got '-7'"));
        assert!(m.get_i64("e").unwrap_err().to_string().contains("expects an integer, got '1.5'"));
    }

    #[test]
    fn caffe_quirks() {
        let text = "# comment\nname:'net' # trailing\nlayer{\n\tlrn_param {\n\t\tnorm_region: ACROSS_CHANNELS;\n\t}\n\
                    input_param { shape: { dim: 1 dim: 3 } }, top: \"a\", top: \"b\";\n}\n";
        let m = parse(text).unwrap();
        assert_eq!(m.get_str("name").unwrap(), Some("net"));
        let layer = m.get_msg("layer").unwrap().unwrap();
        let lrn = layer.get_msg("lrn_param").unwrap().unwrap();
        assert_eq!(lrn.get_enum("norm_region").unwrap(), Some("ACROSS_CHANNELS"));
        let shape = layer.get_msg("input_param").unwrap().unwrap().get_msg("shape").unwrap().unwrap();
        assert_eq!(shape.get_usizes("dim").unwrap(), vec![1, 3]);
        assert_eq!(layer.get_strs("top").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn lists_angle_brackets_and_adjacent_strings() {
        let m = parse("dim: [1, 2, 3] p < x: 1 > s: \"ab\" 'cd' q: [{a: 1}, {a: 2}] e: []").unwrap();
        assert_eq!(m.get_usizes("dim").unwrap(), vec![1, 2, 3]);
        assert_eq!(m.get_msg("p").unwrap().unwrap().get_usize("x").unwrap(), Some(1));
        assert_eq!(m.get_str("s").unwrap(), Some("abcd"));
        assert_eq!(m.get_msgs("q").unwrap().len(), 2);
        assert!(!m.has("e"));
    }

    #[test]
    fn string_escapes() {
        let m = parse(r#"a: "q\"\n\t\\\x41\101" b: 'it\'s'"#).unwrap();
        assert_eq!(m.get_str("a").unwrap(), Some("q\"\n\t\\AA"));
        assert_eq!(m.get_str("b").unwrap(), Some("it's"));
    }

    #[test]
    fn wrong_types_are_clear_errors() {
        let m = parse("a: \"1\"\nb { }\nc: X\nd: 1\nd: 2").unwrap();
        assert_eq!(
            m.get_usize("a").unwrap_err().to_string(),
            "prototxt line 1, column 4: field 'a' expects a non-negative integer, got the string \"1\""
        );
        assert!(m.get_str("b").unwrap_err().to_string().contains("line 2, column 3: field 'b' expects a quoted string, got a message"));
        assert!(m.get_msg("c").unwrap_err().to_string().contains("expects a message in braces, got 'X'"));
        assert!(m.get_str("c").unwrap_err().to_string().contains("expects a quoted string"));
        assert!(m.get_bool("c").unwrap_err().to_string().contains("true or false"));
        assert!(m.get_usize("d").unwrap_err().to_string().contains("line 5, column 4: field 'd' is given more than once"));
        assert_eq!(m.get_usizes("d").unwrap(), vec![1, 2]);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(
            err("a {\n  b: 1\n"),
            "prototxt line 3, column 1: expected '}' to close the '{' of line 1, column 3, found the end of the file"
        );
        assert_eq!(err("a: 1\n  b: 12abc"), "prototxt line 2, column 6: bad number '12abc'");
        assert_eq!(err("a: 1.2.3"), "prototxt line 1, column 4: bad number '1.2.3'");
        assert_eq!(err("a: \"abc\nb: 1"), "prototxt line 1, column 4: unterminated string");
        assert_eq!(err("a: 'abc"), "prototxt line 1, column 4: unterminated string");
        assert_eq!(err("}"), "prototxt line 1, column 1: expected a field name, found '}'");
        assert_eq!(err("a b"), "prototxt line 1, column 3: expected ':' or '{' after 'a', found 'b'");
        assert_eq!(err("a:"), "prototxt line 1, column 3: expected a value, found the end of the file");
        assert_eq!(err("a: @"), "prototxt line 1, column 4: unexpected character '@'");
        assert_eq!(err("a: -foo"), "prototxt line 1, column 4: bad number '-foo'");
        assert_eq!(err("a: \"\\q\""), "prototxt line 1, column 6: unknown escape '\\q' in string");
        assert_eq!(err("a: [1 2]"), "prototxt line 1, column 7: expected ',' or ']' in a list, found the number '2'");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "a {".repeat(100_000);
        assert!(err(&deep).contains("nested more than 100 deep"));
        let ok = format!("{}{}", "a {".repeat(50), "}".repeat(50));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn field_count_is_bounded() {
        let many = "a: 1 ".repeat(MAX_FIELDS + 1);
        assert!(err(&many).contains("more than 1048576 fields"));
        let list = format!("a: [{}1]", "1,".repeat(MAX_FIELDS));
        assert!(err(&list).contains("more than 1048576 fields"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of a real file and some byte soup.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/caffenet.prototxt")).unwrap();
        for end in (0..text.len()).step_by(7) {
            if text.is_char_boundary(end) {
                let _ = parse(&text[..end]);
            }
        }
        let mut state = 12345u64;
        let alphabet = b"{}<>[]:;,'\"\\#\n -.e0x9aZ_\t";
        for _ in 0..2000 {
            let soup: String = (0..40)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(state >> 33) as usize % alphabet.len()] as char
                })
                .collect();
            let _ = parse(&soup);
        }
    }
}
