//! Rule tags: a small, safe condition language over named member features.
//!
//! A rule tag is `tag + category + condition`, where the condition is text an operator writes:
//!
//! ```text
//! orders_365d >= 3 and aov_fen > 30000 and not city in ["上海", "北京"]
//! (channel = "wechat" or has_app) and gmv_90d_fen > gmv_prev_90d_fen
//! ```
//!
//! Grammar (keywords are case-insensitive; `not` binds tighter than `and`, which binds tighter than `or`):
//!
//! ```text
//! condition  := or_expr END
//! or_expr    := and_expr ("or" and_expr)*
//! and_expr   := unary ("and" unary)*
//! unary      := "not"* primary
//! primary    := "(" or_expr ")" | comparison
//! comparison := FEATURE (CMP operand | ["not"] "in" "[" literal ("," literal)* "]")?   -- bare FEATURE: a yes/no feature is true
//! operand    := literal | FEATURE
//! literal    := NUMBER | STRING | "true" | "false"
//! CMP        := ">=" | ">" | "<=" | "<" | "=" | "==" | "!=" | "<>"
//! FEATURE    := [A-Za-z_][A-Za-z0-9_]*        NUMBER := -?[0-9][0-9_]*(\.[0-9]+)?
//! STRING     := "…" | '…' | “…”   (backslash escapes the next character)
//! ```
//!
//! Lifecycle: [`parse_condition`] checks the syntax (errors carry the 1-based character column and the
//! offending token); [`Condition::compile`] resolves feature names against a declared [`FeatureSchema`] and
//! checks types (unknown features and type mismatches are reported with their column); the resulting
//! [`CompiledCondition`] is evaluated per member with no allocation.
//!
//! Missing values use Kleene three-valued logic, as SQL does with NULL: a comparison on a feature the member
//! does not have (or whose value is NaN or of the wrong type) is *unknown*; `not unknown` is unknown,
//! `false and unknown` is false, `true or unknown` is true, and a tag fires only when the condition is
//! *true*. So `not city in ["上海"]` does not tag a member whose city is unknown.
//!
//! Safety: a condition is at most [`MAX_CONDITION_CHARS`] characters and [`MAX_NESTING`] parentheses deep,
//! there are no functions, loops, arithmetic or side effects, so evaluation is linear in the condition's size.
//!
//! The lexer and recursive-descent parser are written by hand rather than with a combinator crate (winnow,
//! nom): the grammar has five rules and a dozen token kinds, and a hand-written lexer gives every token its
//! exact character column and text for the typed error, and the nesting guard is one counter; a combinator
//! crate would still need its failure offsets mapped back to tokens and its alternatives' errors merged.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::weight::{TagObservation, TagSource};

/// Longest condition accepted, in characters; keeps parsing and evaluation cost bounded.
pub const MAX_CONDITION_CHARS: usize = 4096;
/// Deepest parenthesis nesting accepted; bounds the parser's recursion.
pub const MAX_NESTING: usize = 32;

/// Why a condition, a schema or a rule set was rejected. Columns are 1-based character positions in the
/// condition text (a Chinese character counts as one column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// The text does not follow the grammar.
    #[error("column {column}: unexpected {found}; expected {expected}")]
    Syntax {
        /// 1-based character column of the offending token.
        column: usize,
        /// The offending token as written (or "end of condition").
        found: String,
        /// What the grammar allows at that point.
        expected: String,
    },
    /// The condition names a feature that the schema does not declare.
    #[error("column {column}: unknown feature `{name}`")]
    UnknownFeature {
        /// 1-based character column of the feature name.
        column: usize,
        /// The name as written.
        name: String,
    },
    /// A comparison does not fit the feature's declared type (e.g. `city > 3`).
    #[error("column {column}: {detail}")]
    Type {
        /// 1-based character column of the offending part.
        column: usize,
        /// The feature involved.
        feature: String,
        /// What is wrong, in words.
        detail: String,
    },
    /// The condition is empty or only whitespace.
    #[error("the condition is empty")]
    Empty,
    /// The condition exceeds [`MAX_CONDITION_CHARS`].
    #[error("the condition is {chars} characters long; at most {max} are allowed")]
    TooLong {
        /// Length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// Parentheses nest deeper than [`MAX_NESTING`].
    #[error("column {column}: parentheses nest deeper than {max} levels")]
    TooDeep {
        /// Column of the parenthesis that went too deep.
        column: usize,
        /// The limit.
        max: usize,
    },
    /// A feature name is declared twice or is not a valid name.
    #[error("feature declaration `{name}`: {detail}")]
    BadDeclaration {
        /// The declared name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A rule tag definition is invalid; wraps the condition's error with the tag it belongs to.
    #[error("rule tag `{tag}`: {error}")]
    InRule {
        /// The rule's tag.
        tag: String,
        /// What is wrong with it.
        error: Box<RuleError>,
    },
}

/// The type of a member feature, declared once so conditions can be checked before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    /// Counts, money in fen, days, scores: compared with `<`, `>=`, `=`, `in`, ….
    Number,
    /// Cities, channels, tiers: compared with `=`, `!=` and `in`.
    Text,
    /// Yes/no facts: usable bare (`has_app`) or compared with `true`/`false`.
    Bool,
}

impl fmt::Display for FeatureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureType::Number => "a number",
            FeatureType::Text => "text",
            FeatureType::Bool => "yes/no",
        })
    }
}

/// One feature a condition may use: its name and type, and optionally what it means for the rule editor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDecl {
    /// The name used in conditions, e.g. `orders_365d`.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// Human description shown next to the name.
    #[serde(default)]
    pub description: Option<String>,
}

/// The declared feature list that conditions are validated against; a feature's id is its position here.
/// Deserializes from a list of [`FeatureDecl`]s (checked like [`FeatureSchema::new`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Vec<FeatureDecl>")]
pub struct FeatureSchema {
    decls: Vec<FeatureDecl>,
    index: HashMap<String, usize>,
}

impl FeatureSchema {
    /// Builds a schema; rejects duplicate names and names the condition language could not spell.
    pub fn new(decls: Vec<FeatureDecl>) -> Result<Self, RuleError> {
        let mut index = HashMap::with_capacity(decls.len());
        for (i, d) in decls.iter().enumerate() {
            if !is_valid_name(&d.name) {
                return Err(RuleError::BadDeclaration {
                    name: d.name.clone(),
                    detail: "a feature name is a letter or `_` followed by letters, digits or `_`, \
                             and is not a keyword"
                        .into(),
                });
            }
            if index.insert(d.name.clone(), i).is_some() {
                return Err(RuleError::BadDeclaration { name: d.name.clone(), detail: "declared twice".into() });
            }
        }
        Ok(Self { decls, index })
    }

    /// The declarations in id order.
    pub fn features(&self) -> &[FeatureDecl] {
        &self.decls
    }

    /// The id (position) of a declared feature.
    pub fn id_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

impl TryFrom<Vec<FeatureDecl>> for FeatureSchema {
    type Error = RuleError;
    fn try_from(decls: Vec<FeatureDecl>) -> Result<Self, RuleError> {
        Self::new(decls)
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && keyword(name).is_none()
}

/// An owned feature value, as a caller stores it in a feature map (JSON: number, string or boolean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A yes/no value.
    Bool(bool),
    /// A numeric value (money in fen, counts, days).
    Number(f64),
    /// A text value.
    Text(String),
}

impl Value {
    /// Borrows the value for evaluation.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Number(x) => ValueRef::Number(*x),
            Value::Text(s) => ValueRef::Text(s),
        }
    }
}

/// A borrowed feature value; what [`MemberFeatures`] hands to the evaluator without copying text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// A yes/no value.
    Bool(bool),
    /// A numeric value.
    Number(f64),
    /// A text value.
    Text(&'a str),
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Bool(b) => write!(f, "{b}"),
            ValueRef::Number(x) => write!(f, "{}", fmt_number(*x)),
            ValueRef::Text(s) => write!(f, "\"{s}\""),
        }
    }
}

fn fmt_number(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// How the evaluator looks up one member's features. `id` is the feature's position in the schema the
/// condition was compiled against and `name` its declared name, so a struct or a row in schema order can
/// answer by position and a map by name. `None` means the member has no value (the comparison is unknown).
pub trait MemberFeatures {
    /// The member's value of feature `id` / `name`, if any.
    fn feature(&self, id: usize, name: &str) -> Option<ValueRef<'_>>;
}

impl<S: BuildHasher> MemberFeatures for HashMap<String, Value, S> {
    fn feature(&self, _id: usize, name: &str) -> Option<ValueRef<'_>> {
        self.get(name).map(Value::as_ref)
    }
}

impl MemberFeatures for BTreeMap<String, Value> {
    fn feature(&self, _id: usize, name: &str) -> Option<ValueRef<'_>> {
        self.get(name).map(Value::as_ref)
    }
}

/// A row of values in schema order (`row[id]`), the fastest way to feed many members.
impl MemberFeatures for [Option<Value>] {
    fn feature(&self, id: usize, _name: &str) -> Option<ValueRef<'_>> {
        self.get(id).and_then(|v| v.as_ref().map(Value::as_ref))
    }
}

impl<M: MemberFeatures + ?Sized> MemberFeatures for &M {
    fn feature(&self, id: usize, name: &str) -> Option<ValueRef<'_>> {
        (**self).feature(id, name)
    }
}

/// Kleene three-valued truth: the result of a condition when some features may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// A feature needed to decide is missing; the tag does not fire.
    Unknown,
}

impl Truth {
    fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
    fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
    fn apply_num(self, a: f64, b: f64) -> Truth {
        if a.is_nan() || b.is_nan() {
            return Truth::Unknown;
        }
        Truth::from_bool(match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    True,
    False,
    And,
    Or,
    Not,
    In,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Op(CmpOp),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
    text: String,
}

impl Token {
    fn describe(&self) -> String {
        match &self.tok {
            Tok::End => "end of condition".into(),
            Tok::Ident(n) => format!("feature name `{n}`"),
            Tok::Num(_) => format!("number `{}`", self.text),
            Tok::Str(_) => format!("string {}", self.text),
            _ => format!("`{}`", self.text),
        }
    }
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word.to_ascii_lowercase().as_str() {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "in" => Tok::In,
        "true" => Tok::True,
        "false" => Tok::False,
        _ => return None,
    })
}

fn syntax(column: usize, found: impl Into<String>, expected: impl Into<String>) -> RuleError {
    RuleError::Syntax { column, found: found.into(), expected: expected.into() }
}

const EXPECT_START: &str = "a feature name, `not` or `(`";

fn lex(src: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            keyword(&word).unwrap_or(Tok::Ident(word))
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Tok::Num(x),
                _ => {
                    let raw: String = chars[start..i].iter().collect();
                    return Err(syntax(column, format!("number `{raw}`"), "a finite number"));
                }
            }
        } else if matches!(c, '"' | '\'' | '“') {
            let close = if c == '“' { '”' } else { c };
            i += 1;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(syntax(
                            column,
                            "unterminated string",
                            format!("a closing {close} before the end of the condition"),
                        ));
                    }
                    Some('\\') if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&ch) if ch == close => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        value.push(ch);
                        i += 1;
                    }
                }
            }
            Tok::Str(value)
        } else {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('>', Some('=')) => (Tok::Op(CmpOp::Ge), 2),
                ('<', Some('=')) => (Tok::Op(CmpOp::Le), 2),
                ('<', Some('>')) => (Tok::Op(CmpOp::Ne), 2),
                ('!', Some('=')) => (Tok::Op(CmpOp::Ne), 2),
                ('=', Some('=')) => (Tok::Op(CmpOp::Eq), 2),
                ('>', _) => (Tok::Op(CmpOp::Gt), 1),
                ('<', _) => (Tok::Op(CmpOp::Lt), 1),
                ('=', _) => (Tok::Op(CmpOp::Eq), 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                ('[', _) => (Tok::LBrack, 1),
                (']', _) => (Tok::RBrack, 1),
                (',', _) => (Tok::Comma, 1),
                _ => {
                    let expected = match (c, next) {
                        ('&', Some('&')) => "`and`",
                        ('|', Some('|')) => "`or`",
                        ('!', _) => "`not` (or `!=` to compare)",
                        _ => "a feature name, a number, a quoted string, an operator or a parenthesis",
                    };
                    return Err(syntax(column, format!("character `{c}`"), expected));
                }
            };
            i += len;
            tok
        };
        toks.push(Token { tok, column, text: chars[start..i].iter().collect() });
    }
    toks.push(Token { tok: Tok::End, column: chars.len() + 1, text: String::new() });
    Ok(toks)
}

// ---------------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------------

/// A feature name as written, with its column.
#[derive(Debug, Clone, PartialEq)]
struct Named {
    name: String,
    column: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Lit {
    value: Value,
    column: usize,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Lit(Lit),
    Feature(Named),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Cmp { lhs: Named, op: CmpOp, op_column: usize, rhs: Operand },
    In { lhs: Named, list: Vec<Lit>, negated: bool },
    Bare(Named),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `End` and the parser never advances past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.pos += 1;
        }
        t
    }
    fn unexpected(&self, expected: &str) -> RuleError {
        let t = self.peek();
        syntax(t.column, t.describe(), expected)
    }

    fn or_expr(&mut self) -> Result<Node, RuleError> {
        let mut items = vec![self.and_expr()?];
        while self.peek().tok == Tok::Or {
            self.bump();
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Or(items) })
    }

    fn and_expr(&mut self) -> Result<Node, RuleError> {
        let mut items = vec![self.unary()?];
        while self.peek().tok == Tok::And {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::And(items) })
    }

    fn unary(&mut self) -> Result<Node, RuleError> {
        // `not not x` is `x` in three-valued logic too, so a run of `not`s folds to its parity; this keeps
        // the parser's recursion bounded by the parenthesis depth alone.
        let mut nots = 0usize;
        while self.peek().tok == Tok::Not {
            self.bump();
            nots += 1;
        }
        let inner = self.primary()?;
        Ok(if nots % 2 == 1 { Node::Not(Box::new(inner)) } else { inner })
    }

    fn primary(&mut self) -> Result<Node, RuleError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::LParen => {
                if self.depth >= MAX_NESTING {
                    return Err(RuleError::TooDeep { column: t.column, max: MAX_NESTING });
                }
                self.bump();
                self.depth += 1;
                let inner = self.or_expr()?;
                if self.peek().tok != Tok::RParen {
                    return Err(self.unexpected("`and`, `or` or `)`"));
                }
                self.bump();
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Ident(name) => {
                self.bump();
                self.comparison(Named { name, column: t.column })
            }
            _ => Err(self.unexpected(EXPECT_START)),
        }
    }

    fn comparison(&mut self, lhs: Named) -> Result<Node, RuleError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Op(op) => {
                self.bump();
                let rhs = match self.peek().tok {
                    Tok::Ident(_) => {
                        let r = self.bump();
                        let Tok::Ident(name) = r.tok else {
                            return Err(syntax(r.column, r.describe(), "a feature name"));
                        };
                        Operand::Feature(Named { name, column: r.column })
                    }
                    _ => Operand::Lit(self.literal("a number, a quoted string, true, false or a feature name")?),
                };
                Ok(Node::Cmp { lhs, op, op_column: t.column, rhs })
            }
            Tok::In => {
                self.bump();
                self.in_list(lhs, false)
            }
            Tok::Not => {
                // `feature not in [...]`; a `not` here can only start that form.
                self.bump();
                if self.peek().tok != Tok::In {
                    return Err(self.unexpected("`in` after `not`"));
                }
                self.bump();
                self.in_list(lhs, true)
            }
            Tok::And | Tok::Or | Tok::RParen | Tok::End => Ok(Node::Bare(lhs)),
            _ => Err(self.unexpected(
                "a comparison operator (>=, >, <=, <, =, !=), `in`, `not in`, `and`, `or` or end of condition",
            )),
        }
    }

    fn literal(&mut self, expected: &str) -> Result<Lit, RuleError> {
        let t = self.peek().clone();
        let value = match t.tok {
            Tok::Num(x) => Value::Number(x),
            Tok::Str(s) => Value::Text(s),
            Tok::True => Value::Bool(true),
            Tok::False => Value::Bool(false),
            _ => return Err(self.unexpected(expected)),
        };
        self.bump();
        Ok(Lit { value, column: t.column, text: t.text })
    }

    fn in_list(&mut self, lhs: Named, negated: bool) -> Result<Node, RuleError> {
        if self.peek().tok != Tok::LBrack {
            return Err(self.unexpected("`[` starting a list of values"));
        }
        self.bump();
        let mut list = vec![self.literal("a number, a quoted string, true or false")?];
        loop {
            match self.peek().tok {
                Tok::Comma => {
                    self.bump();
                    list.push(self.literal("a number, a quoted string, true or false")?);
                }
                Tok::RBrack => {
                    self.bump();
                    break;
                }
                _ => return Err(self.unexpected("`,` or `]`")),
            }
        }
        Ok(Node::In { lhs, list, negated })
    }
}

/// A condition that is syntactically valid but not yet checked against a feature schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    root: Node,
}

/// Parses a condition's text; the error names the column and the offending token.
pub fn parse_condition(src: &str) -> Result<Condition, RuleError> {
    let chars = src.chars().count();
    if chars > MAX_CONDITION_CHARS {
        return Err(RuleError::TooLong { chars, max: MAX_CONDITION_CHARS });
    }
    if src.trim().is_empty() {
        return Err(RuleError::Empty);
    }
    let mut p = Parser { toks: lex(src)?, pos: 0, depth: 0 };
    let root = p.or_expr()?;
    if p.peek().tok != Tok::End {
        let expected = if p.peek().tok == Tok::RParen {
            "`and`, `or` or end of condition (this `)` has no matching `(`)"
        } else {
            "`and`, `or` or end of condition"
        };
        return Err(p.unexpected(expected));
    }
    Ok(Condition { source: src.to_string(), root })
}

impl Condition {
    /// The condition text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every feature name the condition mentions, in order of first mention.
    pub fn feature_names(&self) -> Vec<&str> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a str>) {
            let mut push = |s: &'a str| {
                if !out.contains(&s) {
                    out.push(s);
                }
            };
            match n {
                Node::And(v) | Node::Or(v) => v.iter().for_each(|c| walk(c, out)),
                Node::Not(c) => walk(c, out),
                Node::Cmp { lhs, rhs, .. } => {
                    push(&lhs.name);
                    if let Operand::Feature(f) = rhs {
                        push(&f.name);
                    }
                }
                Node::In { lhs, .. } | Node::Bare(lhs) => push(&lhs.name),
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Resolves feature names against `schema` and checks types; the result evaluates members quickly.
    pub fn compile(&self, schema: &FeatureSchema) -> Result<CompiledCondition, RuleError> {
        let root = compile_node(&self.root, schema)?;
        let used = self.feature_names().iter().filter_map(|n| schema.id_of(n)).collect();
        Ok(CompiledCondition {
            source: self.source.clone(),
            names: schema.decls.iter().map(|d| d.name.clone()).collect(),
            used,
            root,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Rhs<T> {
    Lit(T),
    Feature(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Not(Box<Expr>),
    Num { f: usize, op: CmpOp, rhs: Rhs<f64> },
    Text { f: usize, eq: bool, rhs: Rhs<Box<str>> },
    Bool { f: usize, eq: bool, rhs: Rhs<bool> },
    NumIn { f: usize, list: Box<[f64]>, negated: bool },
    TextIn { f: usize, list: Box<[Box<str>]>, negated: bool },
    BoolIn { f: usize, list: Box<[bool]>, negated: bool },
}

fn resolve(n: &Named, schema: &FeatureSchema) -> Result<(usize, FeatureType), RuleError> {
    schema
        .id_of(&n.name)
        .map(|id| (id, schema.decls[id].kind))
        .ok_or_else(|| RuleError::UnknownFeature { column: n.column, name: n.name.clone() })
}

fn literal_type(v: &Value) -> FeatureType {
    match v {
        Value::Bool(_) => FeatureType::Bool,
        Value::Number(_) => FeatureType::Number,
        Value::Text(_) => FeatureType::Text,
    }
}

fn type_error(column: usize, feature: &str, detail: String) -> RuleError {
    RuleError::Type { column, feature: feature.to_string(), detail }
}

fn compile_node(n: &Node, schema: &FeatureSchema) -> Result<Expr, RuleError> {
    Ok(match n {
        Node::And(v) => Expr::And(v.iter().map(|c| compile_node(c, schema)).collect::<Result<_, _>>()?),
        Node::Or(v) => Expr::Or(v.iter().map(|c| compile_node(c, schema)).collect::<Result<_, _>>()?),
        Node::Not(c) => Expr::Not(Box::new(compile_node(c, schema)?)),
        Node::Bare(lhs) => {
            let (f, kind) = resolve(lhs, schema)?;
            if kind != FeatureType::Bool {
                return Err(type_error(
                    lhs.column,
                    &lhs.name,
                    format!(
                        "`{}` is {kind}, not yes/no: compare it (e.g. `{} > 0` or `{} = \"…\"`)",
                        lhs.name, lhs.name, lhs.name
                    ),
                ));
            }
            Expr::Bool { f, eq: true, rhs: Rhs::Lit(true) }
        }
        Node::Cmp { lhs, op, op_column, rhs } => {
            let (f, kind) = resolve(lhs, schema)?;
            if kind != FeatureType::Number && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return Err(type_error(
                    *op_column,
                    &lhs.name,
                    format!("`{}` is {kind}: only =, != and in apply, not {}", lhs.name, op.symbol()),
                ));
            }
            let eq = *op == CmpOp::Eq;
            match rhs {
                Operand::Feature(g) => {
                    let (gid, gkind) = resolve(g, schema)?;
                    if gkind != kind {
                        return Err(type_error(
                            g.column,
                            &lhs.name,
                            format!("`{}` is {kind} but `{}` is {gkind}", lhs.name, g.name),
                        ));
                    }
                    match kind {
                        FeatureType::Number => Expr::Num { f, op: *op, rhs: Rhs::Feature(gid) },
                        FeatureType::Text => Expr::Text { f, eq, rhs: Rhs::Feature(gid) },
                        FeatureType::Bool => Expr::Bool { f, eq, rhs: Rhs::Feature(gid) },
                    }
                }
                Operand::Lit(l) => match (&l.value, kind) {
                    (Value::Number(x), FeatureType::Number) => Expr::Num { f, op: *op, rhs: Rhs::Lit(*x) },
                    (Value::Text(s), FeatureType::Text) => Expr::Text { f, eq, rhs: Rhs::Lit(s.as_str().into()) },
                    (Value::Bool(b), FeatureType::Bool) => Expr::Bool { f, eq, rhs: Rhs::Lit(*b) },
                    (v, _) => {
                        return Err(type_error(
                            l.column,
                            &lhs.name,
                            format!("`{}` is {kind} but {} is {}", lhs.name, l.text, literal_type(v)),
                        ));
                    }
                },
            }
        }
        Node::In { lhs, list, negated } => {
            let (f, kind) = resolve(lhs, schema)?;
            if let Some(bad) = list.iter().find(|l| literal_type(&l.value) != kind) {
                return Err(type_error(
                    bad.column,
                    &lhs.name,
                    format!("`{}` is {kind} but the list holds {} ({})", lhs.name, bad.text, literal_type(&bad.value)),
                ));
            }
            let negated = *negated;
            match kind {
                FeatureType::Number => Expr::NumIn {
                    f,
                    list: list
                        .iter()
                        .filter_map(|l| match l.value {
                            Value::Number(x) => Some(x),
                            _ => None,
                        })
                        .collect(),
                    negated,
                },
                FeatureType::Text => Expr::TextIn {
                    f,
                    list: list
                        .iter()
                        .filter_map(|l| match &l.value {
                            Value::Text(s) => Some(s.as_str().into()),
                            _ => None,
                        })
                        .collect(),
                    negated,
                },
                FeatureType::Bool => Expr::BoolIn {
                    f,
                    list: list
                        .iter()
                        .filter_map(|l| match l.value {
                            Value::Bool(b) => Some(b),
                            _ => None,
                        })
                        .collect(),
                    negated,
                },
            }
        }
    })
}

/// A condition resolved against a schema: evaluates one member in time linear in the condition's size,
/// without allocating.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledCondition {
    source: String,
    names: Box<[String]>,
    used: Vec<usize>,
    root: Expr,
}

impl CompiledCondition {
    /// The condition text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Three-valued result for one member (see the module doc for how missing features behave).
    pub fn eval<M: MemberFeatures + ?Sized>(&self, member: &M) -> Truth {
        self.eval_expr(&self.root, member)
    }

    /// Whether the condition is definitely true for the member (unknown counts as not matching).
    pub fn matches<M: MemberFeatures + ?Sized>(&self, member: &M) -> bool {
        self.eval(member) == Truth::True
    }

    /// "name = value" for every feature the condition uses, to explain why it fired.
    pub fn explain<M: MemberFeatures + ?Sized>(&self, member: &M) -> String {
        self.used
            .iter()
            .map(|&id| match self.get(member, id) {
                Some(v) => format!("{} = {v}", self.names[id]),
                None => format!("{} missing", self.names[id]),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[inline]
    fn get<'m, M: MemberFeatures + ?Sized>(&self, m: &'m M, id: usize) -> Option<ValueRef<'m>> {
        m.feature(id, &self.names[id])
    }

    fn num<M: MemberFeatures + ?Sized>(&self, m: &M, id: usize) -> Option<f64> {
        match self.get(m, id) {
            Some(ValueRef::Number(x)) if !x.is_nan() => Some(x),
            _ => None,
        }
    }

    fn eval_expr<M: MemberFeatures + ?Sized>(&self, e: &Expr, m: &M) -> Truth {
        match e {
            Expr::And(items) => {
                let mut acc = Truth::True;
                for it in items.iter() {
                    match self.eval_expr(it, m) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => acc = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                acc
            }
            Expr::Or(items) => {
                let mut acc = Truth::False;
                for it in items.iter() {
                    match self.eval_expr(it, m) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => acc = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                acc
            }
            Expr::Not(inner) => self.eval_expr(inner, m).not(),
            Expr::Num { f, op, rhs } => {
                let Some(a) = self.num(m, *f) else {
                    return Truth::Unknown;
                };
                let b = match rhs {
                    Rhs::Lit(x) => *x,
                    Rhs::Feature(g) => match self.num(m, *g) {
                        Some(b) => b,
                        None => return Truth::Unknown,
                    },
                };
                op.apply_num(a, b)
            }
            Expr::Text { f, eq, rhs } => {
                let Some(ValueRef::Text(a)) = self.get(m, *f) else {
                    return Truth::Unknown;
                };
                let same = match rhs {
                    Rhs::Lit(b) => a == &**b,
                    Rhs::Feature(g) => match self.get(m, *g) {
                        Some(ValueRef::Text(b)) => a == b,
                        _ => return Truth::Unknown,
                    },
                };
                Truth::from_bool(same == *eq)
            }
            Expr::Bool { f, eq, rhs } => {
                let Some(ValueRef::Bool(a)) = self.get(m, *f) else {
                    return Truth::Unknown;
                };
                let same = match rhs {
                    Rhs::Lit(b) => a == *b,
                    Rhs::Feature(g) => match self.get(m, *g) {
                        Some(ValueRef::Bool(b)) => a == b,
                        _ => return Truth::Unknown,
                    },
                };
                Truth::from_bool(same == *eq)
            }
            Expr::NumIn { f, list, negated } => match self.num(m, *f) {
                Some(a) => Truth::from_bool(list.contains(&a) != *negated),
                None => Truth::Unknown,
            },
            Expr::TextIn { f, list, negated } => match self.get(m, *f) {
                Some(ValueRef::Text(a)) => Truth::from_bool(list.iter().any(|s| &**s == a) != *negated),
                _ => Truth::Unknown,
            },
            Expr::BoolIn { f, list, negated } => match self.get(m, *f) {
                Some(ValueRef::Bool(a)) => Truth::from_bool(list.contains(&a) != *negated),
                _ => Truth::Unknown,
            },
        }
    }
}

fn default_strength() -> f64 {
    1.0
}

/// A rule tag as an operator defines it (stored as configuration, e.g. JSON or TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleTagDef {
    /// The tag name members receive, e.g. `high_value` or `高价值`.
    pub tag: String,
    /// The tag category (basic, behaviour, interest, value, lifecycle, channel, …); selects the half-life.
    pub category: String,
    /// The condition, in the language of this module.
    pub condition: String,
    /// Evidence strength in (0, 1] when the condition holds; default 1 (the rule is a fact this run).
    #[serde(default = "default_strength")]
    pub strength: f64,
}

/// A compiled set of rule tags, evaluated for every member on each run.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<(RuleTagDef, CompiledCondition)>,
}

impl RuleSet {
    /// Parses and validates every definition against the schema; the first error names its tag.
    pub fn compile(defs: &[RuleTagDef], schema: &FeatureSchema) -> Result<Self, RuleError> {
        let rules = defs
            .iter()
            .map(|d| {
                let wrap = |error| RuleError::InRule { tag: d.tag.clone(), error: Box::new(error) };
                if !(d.strength > 0.0 && d.strength <= 1.0) {
                    return Err(wrap(RuleError::BadDeclaration {
                        name: d.tag.clone(),
                        detail: format!("strength {} is not in (0, 1]", d.strength),
                    }));
                }
                let compiled = parse_condition(&d.condition).and_then(|c| c.compile(schema)).map_err(wrap)?;
                Ok((d.clone(), compiled))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// The definitions, in the order given.
    pub fn definitions(&self) -> impl Iterator<Item = &RuleTagDef> {
        self.rules.iter().map(|(d, _)| d)
    }

    /// Positions (in definition order) of the rules whose condition is true for the member.
    pub fn matching<M: MemberFeatures + ?Sized>(&self, member: &M) -> Vec<usize> {
        self.rules.iter().enumerate().filter(|(_, (_, c))| c.matches(member)).map(|(i, _)| i).collect()
    }

    /// One [`TagObservation`] per rule that holds for the member, with the feature values as the reason.
    pub fn observations<M: MemberFeatures + ?Sized>(
        &self,
        member_id: i64,
        member: &M,
        at: DateTime<Utc>,
    ) -> Vec<TagObservation> {
        self.rules
            .iter()
            .filter(|(_, c)| c.matches(member))
            .map(|(d, c)| TagObservation {
                member_id,
                tag: d.tag.clone(),
                category: d.category.clone(),
                source: TagSource::Rule,
                at,
                strength: d.strength,
                reason: format!("rule `{}` held ({})", c.source(), c.explain(member)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
