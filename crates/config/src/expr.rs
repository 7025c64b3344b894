//! CircleCI's expression language: `pipeline.git.branch == "main" and not job.ssh.enabled`.
//!
//! CircleCI accepts these expressions in context expression restrictions, expression-based job
//! filters and workflow `when`/`unless`. The server uses [`parse`] when a restriction is created
//! (with [`Expr::variables`] to refuse names it will never supply) and [`Expr::eval`] when a job
//! asks for the context.
//!
//! Syntax, as CircleCI's configuration reference documents it:
//! - literals: double-quoted strings (escapes `\"` and `\\` only), numbers (`10`, `1.5`, `-3`),
//!   `true` and `false`;
//! - variables: dotted names of letters, digits, `-` and `_`, starting with a letter
//!   (`pipeline.git.branch`, `pipeline.parameters.run-storybook-tests`, `job.ssh.enabled`);
//! - `==` and `!=`: equality of strings, numbers and booleans; operands of different types are
//!   never equal (`==` is false, `!=` is true), so a null tag is not equal to any string;
//! - `starts-with`: string prefix; a non-string operand (a null tag included) is an error;
//! - `<`, `<=`, `>`, `>=`: numeric comparisons; a non-number operand is an error;
//! - `not`: boolean negation with very high precedence, so `not a and b` is `(not a) and b`
//!   and `not a == b` is `(not a) == b`; write `not (a == b)`;
//! - `and` (binds tighter than `or`) and `or`: short-circuiting, and, as in CircleCI, they yield
//!   one of their operands (`x and 10 or 1` is 10 or 1), with `false`, null, `0`, NaN and `""`
//!   counting as false;
//! - parentheses group; spaces, tabs and newlines separate tokens and mean nothing else.
//!
//! Comparisons do not chain (`a == b == c` is refused): CircleCI does not document what it
//! means, and a restriction should not depend on a guess. `matches`, `in`, single-quoted
//! strings and a `null` literal are not in the reference and are refused with a clear message.
//!
//! Errors carry a column: the 1-based position, in characters, from the start of the text (a
//! newline counts as one character). Input is bounded ([`MAX_EXPR_LEN`] bytes, [`MAX_DEPTH`]
//! levels of parentheses and `not`), so untrusted text never exhausts the stack.

use std::fmt;

/// The longest expression [`parse`] accepts, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;

/// How deeply parentheses and `not` may nest.
pub const MAX_DEPTH: usize = 32;

/// A value an expression computes or a variable holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Number(f64),
    /// A value the pipeline does not have, such as `pipeline.git.tag` on a branch push.
    Null,
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Null => "null",
        }
    }

    /// CircleCI's truthiness, used by `and` and `or`.
    fn is_truthy(&self) -> bool {
        match self {
            Value::Str(text) => !text.is_empty(),
            Value::Bool(value) => *value,
            Value::Number(number) => *number != 0.0 && !number.is_nan(),
            Value::Null => false,
        }
    }
}

/// A problem with an expression, at a 1-based character column of its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

fn error(column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        column,
        message: message.into(),
    }
}

/// A parsed expression. Build one with [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
    /// Where the node starts (for a comparison: where its operator is), for evaluation errors.
    column: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Variable(String),
    Not(Box<Expr>),
    // `and` and `or` chains are flat lists, so a long chain does not deepen the tree.
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Eq,
    Ne,
    StartsWith,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::StartsWith => "starts-with",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Str(String),
    Number(f64),
    Variable(String),
    True,
    False,
    And,
    Or,
    Not,
    Compare(CompareOp),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::Str(_) => f.write_str("a string"),
            Token::Number(_) => f.write_str("a number"),
            Token::Variable(name) => write!(f, "variable `{name}`"),
            Token::True => f.write_str("`true`"),
            Token::False => f.write_str("`false`"),
            Token::And => f.write_str("`and`"),
            Token::Or => f.write_str("`or`"),
            Token::Not => f.write_str("`not`"),
            Token::Compare(op) => write!(f, "`{}`", op.symbol()),
        }
    }
}

/// Parses the text of an expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPR_LEN {
        return Err(error(
            1,
            format!(
                "expression is {} bytes long, more than the limit of {MAX_EXPR_LEN}",
                text.len()
            ),
        ));
    }
    let (tokens, end_column) = lex(text)?;
    let mut parser = Parser {
        tokens,
        position: 0,
        end_column,
        depth: 0,
    };
    let expr = parser.or_expr()?;
    if let Some((token, column)) = parser.peek() {
        let message = if matches!(token, Token::Compare(_)) {
            format!("comparisons do not chain: found {token} after a comparison; use `and`")
        } else {
            format!("expected `and`, `or` or the end of the expression, found {token}")
        };
        return Err(error(column, message));
    }
    Ok(expr)
}

fn lex(text: &str) -> Result<(Vec<(Token, usize)>, usize), ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        let column = index + 1;
        let next = chars.get(index + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => index += 1,
            '(' => {
                tokens.push((Token::LParen, column));
                index += 1;
            }
            ')' => {
                tokens.push((Token::RParen, column));
                index += 1;
            }
            '"' => {
                let mut value = String::new();
                index += 1;
                loop {
                    match chars.get(index) {
                        None => {
                            return Err(error(
                                column,
                                "unterminated string: expected a closing `\"`",
                            ));
                        }
                        Some('"') => {
                            index += 1;
                            break;
                        }
                        Some('\\') => match chars.get(index + 1) {
                            Some(escaped @ ('"' | '\\')) => {
                                value.push(*escaped);
                                index += 2;
                            }
                            Some(other) => {
                                return Err(error(
                                    index + 1,
                                    format!(
                                        "unknown escape `\\{other}` in a string: expected `\\\"` or `\\\\`"
                                    ),
                                ));
                            }
                            None => {
                                return Err(error(
                                    column,
                                    "unterminated string: expected a closing `\"`",
                                ));
                            }
                        },
                        Some(other) => {
                            value.push(*other);
                            index += 1;
                        }
                    }
                }
                tokens.push((Token::Str(value), column));
            }
            '\'' => {
                return Err(error(
                    column,
                    "single-quoted strings are not supported: use double quotes",
                ));
            }
            '=' | '!' | '<' | '>' => {
                let (op, width) = match (c, next) {
                    ('=', Some('=')) => (CompareOp::Eq, 2),
                    ('!', Some('=')) => (CompareOp::Ne, 2),
                    ('<', Some('=')) => (CompareOp::Le, 2),
                    ('>', Some('=')) => (CompareOp::Ge, 2),
                    ('<', _) => (CompareOp::Lt, 1),
                    ('>', _) => (CompareOp::Gt, 1),
                    ('=', _) => return Err(error(column, "unexpected `=`: expected `==`")),
                    _ => {
                        return Err(error(
                            column,
                            "unexpected `!`: expected `!=` (negation is `not`)",
                        ));
                    }
                };
                tokens.push((Token::Compare(op), column));
                index += width;
            }
            '0'..='9' | '-' if c != '-' || next.is_some_and(|d| d.is_ascii_digit()) => {
                let start = index;
                index += 1;
                while index < chars.len() && chars[index].is_ascii_digit() {
                    index += 1;
                }
                if chars.get(index) == Some(&'.')
                    && chars.get(index + 1).is_some_and(|d| d.is_ascii_digit())
                {
                    index += 1;
                    while index < chars.len() && chars[index].is_ascii_digit() {
                        index += 1;
                    }
                }
                if chars.get(index).is_some_and(|d| is_word_char(*d)) {
                    return Err(error(
                        index + 1,
                        format!("unexpected `{}` in a number", chars[index]),
                    ));
                }
                let literal: String = chars[start..index].iter().collect();
                let number = literal
                    .parse::<f64>()
                    .map_err(|_| error(column, format!("invalid number `{literal}`")))?;
                tokens.push((Token::Number(number), column));
            }
            c if c.is_ascii_alphabetic() => {
                let start = index;
                while index < chars.len() && is_word_char(chars[index]) {
                    index += 1;
                }
                let word: String = chars[start..index].iter().collect();
                let token = match word.as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "true" => Token::True,
                    "false" => Token::False,
                    "starts-with" => Token::Compare(CompareOp::StartsWith),
                    "matches" | "in" | "null" => {
                        return Err(error(
                            column,
                            format!("`{word}` is not supported in expressions"),
                        ));
                    }
                    _ => Token::Variable(check_variable(&word, column)?),
                };
                tokens.push((token, column));
            }
            other => {
                return Err(error(
                    column,
                    format!(
                        "unexpected character `{}`: expected a string, number, variable, operator or parenthesis",
                        other.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok((tokens, chars.len() + 1))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Checks the segments of a dotted name: each starts with a letter, none is empty.
fn check_variable(word: &str, column: usize) -> Result<String, ExprError> {
    let mut offset = 0;
    for segment in word.split('.') {
        if !segment.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(error(
                column + offset,
                format!(
                    "invalid variable name `{word}`: each part between dots must start with a letter"
                ),
            ));
        }
        offset += segment.len() + 1;
    }
    Ok(word.to_string())
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    position: usize,
    end_column: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<(&Token, usize)> {
        self.tokens
            .get(self.position)
            .map(|(token, column)| (token, *column))
    }

    fn found(&self) -> (String, usize) {
        match self.peek() {
            Some((token, column)) => (token.to_string(), column),
            None => ("the end of the expression".to_string(), self.end_column),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ExprError> {
        let first = self.and_expr()?;
        let column = first.column;
        let mut operands = vec![first];
        while let Some((Token::Or, _)) = self.peek() {
            self.position += 1;
            operands.push(self.and_expr()?);
        }
        Ok(collapse(operands, column, Node::Or))
    }

    fn and_expr(&mut self) -> Result<Expr, ExprError> {
        let first = self.comparison()?;
        let column = first.column;
        let mut operands = vec![first];
        while let Some((Token::And, _)) = self.peek() {
            self.position += 1;
            operands.push(self.comparison()?);
        }
        Ok(collapse(operands, column, Node::And))
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let left = self.unary()?;
        if let Some((Token::Compare(op), column)) = self.peek() {
            let op = *op;
            self.position += 1;
            let right = self.unary()?;
            return Ok(Expr {
                node: Node::Compare(op, Box::new(left), Box::new(right)),
                column,
            });
        }
        Ok(left)
    }

    fn enter(&mut self, column: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(
                column,
                format!("expression nests deeper than {MAX_DEPTH} levels of `(` and `not`"),
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let (found, column) = self.found();
        let Some((token, _)) = self.peek() else {
            return Err(error(
                column,
                format!("expected a value, `not` or `(`, found {found}"),
            ));
        };
        let token = token.clone();
        self.position += 1;
        let node = match token {
            Token::Not => {
                self.enter(column)?;
                let operand = self.unary()?;
                self.depth -= 1;
                Node::Not(Box::new(operand))
            }
            Token::LParen => {
                self.enter(column)?;
                let inner = self.or_expr()?;
                match self.peek() {
                    Some((Token::RParen, _)) => self.position += 1,
                    _ => {
                        let (found, at) = self.found();
                        return Err(error(
                            at,
                            format!(
                                "expected `)` to close the `(` at column {column}, found {found}"
                            ),
                        ));
                    }
                }
                self.depth -= 1;
                // Keep the inner node; only its column moves to the parenthesis.
                return Ok(inner);
            }
            Token::Str(value) => Node::Literal(Value::Str(value)),
            Token::Number(value) => Node::Literal(Value::Number(value)),
            Token::True => Node::Literal(Value::Bool(true)),
            Token::False => Node::Literal(Value::Bool(false)),
            Token::Variable(name) => Node::Variable(name),
            Token::RParen | Token::And | Token::Or | Token::Compare(_) => {
                return Err(error(
                    column,
                    format!("expected a value, `not` or `(`, found {found}"),
                ));
            }
        };
        Ok(Expr { node, column })
    }
}

fn collapse(mut operands: Vec<Expr>, column: usize, make: fn(Vec<Expr>) -> Node) -> Expr {
    if operands.len() == 1 {
        return operands.remove(0);
    }
    Expr {
        node: make(operands),
        column,
    }
}

impl Expr {
    /// Evaluates the expression; it must yield a boolean.
    ///
    /// `lookup` returns a variable's value, or `None` for a name it does not know, which is an
    /// error naming the variable. A variable the pipeline knows but has no value for (the tag of
    /// a branch push) should be [`Value::Null`]: it is unequal to every string, and an error
    /// under `starts-with` and numeric comparisons, so a caller that treats every error as
    /// "refuse" fails closed, as CircleCI does.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<bool, ExprError> {
        match self.value(lookup)? {
            Value::Bool(result) => Ok(result),
            other => Err(error(
                self.column,
                format!(
                    "expression evaluates to {}, not a boolean",
                    other.type_name()
                ),
            )),
        }
    }

    fn value(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<Value, ExprError> {
        match &self.node {
            Node::Literal(value) => Ok(value.clone()),
            Node::Variable(name) => {
                lookup(name).ok_or_else(|| error(self.column, format!("unknown variable `{name}`")))
            }
            Node::Not(operand) => match operand.value(lookup)? {
                Value::Bool(value) => Ok(Value::Bool(!value)),
                other => Err(error(
                    self.column,
                    format!("`not` needs a boolean, found {}", other.type_name()),
                )),
            },
            Node::And(operands) => {
                let mut last = Value::Bool(true);
                for operand in operands {
                    last = operand.value(lookup)?;
                    if !last.is_truthy() {
                        break;
                    }
                }
                Ok(last)
            }
            Node::Or(operands) => {
                let mut last = Value::Bool(false);
                for operand in operands {
                    last = operand.value(lookup)?;
                    if last.is_truthy() {
                        break;
                    }
                }
                Ok(last)
            }
            Node::Compare(op, left, right) => {
                let left = left.value(lookup)?;
                let right = right.value(lookup)?;
                compare(*op, &left, &right).map_err(|message| error(self.column, message))
            }
        }
    }

    /// Every variable the expression reads, once each, in order of first appearance.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.collect_variables(&mut names);
        names
    }

    fn collect_variables(&self, names: &mut Vec<String>) {
        match &self.node {
            Node::Literal(_) => {}
            Node::Variable(name) => {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            Node::Not(operand) => operand.collect_variables(names),
            Node::And(operands) | Node::Or(operands) => {
                for operand in operands {
                    operand.collect_variables(names);
                }
            }
            Node::Compare(_, left, right) => {
                left.collect_variables(names);
                right.collect_variables(names);
            }
        }
    }
}

fn compare(op: CompareOp, left: &Value, right: &Value) -> Result<Value, String> {
    let result = match op {
        CompareOp::Eq => left == right,
        CompareOp::Ne => left != right,
        CompareOp::StartsWith => match (left, right) {
            (Value::Str(text), Value::Str(prefix)) => text.starts_with(prefix.as_str()),
            _ => {
                return Err(format!(
                    "`starts-with` needs two strings, found {} and {}",
                    left.type_name(),
                    right.type_name()
                ));
            }
        },
        CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => match (left, right) {
            (Value::Number(a), Value::Number(b)) => match op {
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                CompareOp::Gt => a > b,
                _ => a >= b,
            },
            _ => {
                return Err(format!(
                    "`{}` needs two numbers, found {} and {}",
                    op.symbol(),
                    left.type_name(),
                    right.type_name()
                ));
            }
        },
    };
    Ok(Value::Bool(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Value)]) -> impl Fn(&str) -> Option<Value> + use<> {
        let pairs: Vec<(String, Value)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(known, _)| known == name)
                .map(|(_, value)| value.clone())
        }
    }

    fn s(text: &str) -> Value {
        Value::Str(text.to_string())
    }

    fn eval(text: &str, pairs: &[(&str, Value)]) -> Result<bool, ExprError> {
        parse(text)?.eval(&vars(pairs))
    }

    fn parse_error(text: &str) -> ExprError {
        parse(text).expect_err(text)
    }

    const EXAMPLE: &str =
        r#"pipeline.git.branch == "main" and not (pipeline.git.tag starts-with "x")"#;

    #[test]
    fn the_issue_example() {
        let expr = parse(EXAMPLE).unwrap();
        assert_eq!(
            expr.variables(),
            vec!["pipeline.git.branch", "pipeline.git.tag"]
        );
        let run = |branch: &str, tag: &str| {
            expr.eval(&vars(&[
                ("pipeline.git.branch", s(branch)),
                ("pipeline.git.tag", s(tag)),
            ]))
        };
        assert_eq!(run("main", "v1"), Ok(true));
        assert_eq!(run("main", "x1"), Ok(false));
        assert_eq!(run("dev", "v1"), Ok(false));
        // A null tag under `starts-with` is an error (fail closed) when the branch matches...
        let null_tag = vars(&[
            ("pipeline.git.branch", s("main")),
            ("pipeline.git.tag", Value::Null),
        ]);
        let err = expr.eval(&null_tag).unwrap_err();
        assert_eq!(err.column, 57, "{err}");
        assert!(err.message.contains("starts-with"), "{err}");
        // ...and never reached when it does not: `and` short-circuits.
        let other_branch = vars(&[
            ("pipeline.git.branch", s("dev")),
            ("pipeline.git.tag", Value::Null),
        ]);
        assert_eq!(expr.eval(&other_branch), Ok(false));
    }

    #[test]
    fn documented_examples_parse() {
        for text in [
            r#"pipeline.git.branch == "main" and not (pipeline.trigger.type starts-with "api")"#,
            "pipeline.git.branch == \"main\"\n\tand not job.ssh.enabled\nand not (pipeline.config_source starts-with \"api\")",
            r#"pipeline.git.branch != "main" and pipeline.git.branch != "canary""#,
            r#"pipeline.parameters.run-storybook-tests or pipeline.git.branch starts-with "deploy""#,
            r#"pipeline.project.git_url == "https://example.invalid/a.git" and pipeline.number >= 10"#,
        ] {
            parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
        }
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        let t = Value::Bool(true);
        let f = Value::Bool(false);
        // The reference's own example: foo true, bar false.
        let foo_bar = [("foo", t.clone()), ("bar", f.clone())];
        assert_eq!(eval("not foo and bar", &foo_bar), Ok(false));
        assert_eq!(eval("not (foo and bar)", &foo_bar), Ok(true));
        // `and` before `or`: true or (false and false) is true; (true or false) and false is not.
        let abc = [("a", t.clone()), ("b", f.clone()), ("c", f.clone())];
        assert_eq!(eval("a or b and c", &abc), Ok(true));
        assert_eq!(eval("(a or b) and c", &abc), Ok(false));
        assert_eq!(eval("b and c or a", &abc), Ok(true));
        // `not` applies to the nearest operand only: (not a) or a.
        assert_eq!(eval("not a or a", &abc), Ok(true));
        assert_eq!(eval("not (a or a)", &abc), Ok(false));
        // `not` binds tighter than `==`: (not false) == true.
        assert_eq!(eval("not b == true", &abc), Ok(true));
        assert_eq!(eval("not not a", &abc), Ok(true));
    }

    #[test]
    fn parentheses_group_and_nest() {
        let values = [("x", s("a")), ("y", s("b"))];
        assert_eq!(eval(r#"((x == "a"))"#, &values), Ok(true));
        assert_eq!(
            eval(r#"(x == "b" or y == "b") and (x != "c")"#, &values),
            Ok(true)
        );
        assert_eq!(
            eval(r#"x == "b" or (y == "b" and x == "c")"#, &values),
            Ok(false)
        );
        let deep = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(eval(&deep, &[]), Ok(true));
    }

    #[test]
    fn equality_across_types_and_literals() {
        let values = [
            ("n", Value::Number(10.0)),
            ("b", Value::Bool(true)),
            ("tag", Value::Null),
            ("name", s("say \"hi\" \\o/")),
        ];
        assert_eq!(eval("n == 10", &values), Ok(true));
        assert_eq!(eval("n == 10.0 and n != -3", &values), Ok(true));
        assert_eq!(eval(r#"n == "10""#, &values), Ok(false));
        assert_eq!(eval(r#"n != "10""#, &values), Ok(true));
        assert_eq!(eval("b == true and b != false", &values), Ok(true));
        assert_eq!(eval(r#"tag == """#, &values), Ok(false));
        assert_eq!(eval(r#"tag != "v1""#, &values), Ok(true));
        assert_eq!(eval(r#"name == "say \"hi\" \\o/""#, &values), Ok(true));
        assert_eq!(eval(r#""hello world" starts-with "hello""#, &[]), Ok(true));
        assert_eq!(eval(r#""hello" starts-with "hello world""#, &[]), Ok(false));
    }

    #[test]
    fn numeric_comparisons() {
        let values = [("pipeline.number", Value::Number(42.0))];
        assert_eq!(eval("pipeline.number > 41", &values), Ok(true));
        assert_eq!(eval("pipeline.number >= 42", &values), Ok(true));
        assert_eq!(eval("pipeline.number < 42", &values), Ok(false));
        assert_eq!(eval("pipeline.number <= 42.5", &values), Ok(true));
        let err = eval(r#"pipeline.number > "41""#, &values).unwrap_err();
        assert_eq!(err.column, 17, "{err}");
        assert!(err.message.contains("needs two numbers"), "{err}");
    }

    #[test]
    fn and_or_yield_operands_as_circleci_does() {
        let values = [("pipeline.git.branch", s("main")), ("tag", Value::Null)];
        // A boolean is required at the top, but operands may be any value.
        assert_eq!(eval("tag or true", &values), Ok(true));
        assert_eq!(eval(r#""" or false"#, &values), Ok(false));
        let err = eval(r#"pipeline.git.branch == "main" and 10 or 1"#, &values).unwrap_err();
        assert!(err.message.contains("a number, not a boolean"), "{err}");
    }

    #[test]
    fn non_boolean_result_is_an_error() {
        let values = [("pipeline.git.branch", s("main"))];
        let err = eval("pipeline.git.branch", &values).unwrap_err();
        assert_eq!(err.column, 1);
        assert_eq!(
            err.to_string(),
            "column 1: expression evaluates to a string, not a boolean"
        );
        let err = eval("not pipeline.git.branch", &values).unwrap_err();
        assert!(err.message.contains("`not` needs a boolean"), "{err}");
        assert!(eval("3", &[]).is_err());
    }

    #[test]
    fn unknown_variable_is_an_error_naming_it() {
        let values = [("pipeline.git.branch", s("main"))];
        let err = eval(
            r#"pipeline.git.branch == "main" and job.ssh.enabled"#,
            &values,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 35: unknown variable `job.ssh.enabled`"
        );
    }

    #[test]
    fn variables_lists_each_name_once() {
        let expr = parse(r#"(a.b == "1" or c) and not a.b and d-e.f_g < 3"#).unwrap();
        assert_eq!(expr.variables(), vec!["a.b", "c", "d-e.f_g"]);
        assert!(parse("true").unwrap().variables().is_empty());
    }

    #[test]
    fn unterminated_string() {
        let err = parse_error(r#"pipeline.git.branch == "main"#);
        assert_eq!(err.column, 24);
        assert_eq!(
            err.to_string(),
            "column 24: unterminated string: expected a closing `\"`"
        );
        assert_eq!(parse_error(r#"x == "a\"#).column, 6);
        let err = parse_error(r#"x == "a\n""#);
        assert_eq!(err.column, 8, "{err}");
        assert!(err.message.contains("unknown escape"), "{err}");
    }

    #[test]
    fn dangling_operators() {
        let err = parse_error(r#"pipeline.git.branch =="#);
        assert_eq!(
            err.to_string(),
            "column 23: expected a value, `not` or `(`, found the end of the expression"
        );
        let err = parse_error("a and");
        assert_eq!(err.column, 6);
        let err = parse_error("or a");
        assert_eq!(
            err.to_string(),
            "column 1: expected a value, `not` or `(`, found `or`"
        );
        let err = parse_error("not");
        assert_eq!(err.column, 4);
        let err = parse_error("a == == b");
        assert_eq!(
            err.to_string(),
            "column 6: expected a value, `not` or `(`, found `==`"
        );
        assert_eq!(parse_error("").column, 1);
        assert_eq!(parse_error("   ").column, 4);
    }

    #[test]
    fn unbalanced_parentheses() {
        let err = parse_error("(a and b");
        assert_eq!(
            err.to_string(),
            "column 9: expected `)` to close the `(` at column 1, found the end of the expression"
        );
        let err = parse_error("a and b)");
        assert_eq!(
            err.to_string(),
            "column 8: expected `and`, `or` or the end of the expression, found `)`"
        );
        assert_eq!(parse_error("()").column, 2);
    }

    #[test]
    fn unknown_tokens() {
        let err = parse_error("a && b");
        assert_eq!(err.column, 3);
        assert!(err.message.starts_with("unexpected character `&`"), "{err}");
        assert_eq!(
            parse_error("a = b").to_string(),
            "column 3: unexpected `=`: expected `==`"
        );
        assert_eq!(parse_error("!a").column, 1);
        assert_eq!(parse_error("x == 'main'").column, 6);
        assert_eq!(parse_error(r#"x matches "a""#).column, 3);
        assert_eq!(parse_error("x == null").column, 6);
        assert_eq!(parse_error("a b").column, 3);
        // Columns count characters, not bytes.
        let err = parse_error("\"é\" == é");
        assert_eq!(err.column, 8, "{err}");
        assert_eq!(parse_error("a..b == 1").column, 3);
        assert_eq!(parse_error("a. == 1").column, 3);
        assert_eq!(parse_error("x == 12ab").column, 8);
        let err = parse_error("a == b == c");
        assert!(err.message.contains("do not chain"), "{err}");
        assert_eq!(err.column, 8);
    }

    #[test]
    fn limits() {
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let err = parse_error(&deep);
        assert_eq!(err.column, MAX_DEPTH + 1);
        assert!(err.message.contains("nests deeper than 32"), "{err}");
        let nots = format!("{}true", "not ".repeat(MAX_DEPTH + 1));
        assert!(parse_error(&nots).message.contains("nests deeper"));
        let long = format!("a == \"{}\"", "x".repeat(MAX_EXPR_LEN));
        assert!(
            parse_error(&long)
                .message
                .contains("more than the limit of 4096")
        );
        // A long flat chain is not nesting: it parses and evaluates without deep recursion.
        let chain = vec!["true"; 400].join(" and ");
        assert_eq!(eval(&chain, &[]), Ok(true));
    }
}
