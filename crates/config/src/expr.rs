//! Placeholder for CircleCI's expression language (replaced by the `expr` branch).
#![allow(dead_code)]

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Number(f64),
    Null,
}

#[derive(Debug, Clone)]
pub struct Expr {
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ExprError {}

pub fn parse(text: &str) -> Result<Expr, ExprError> {
    Ok(Expr {
        text: text.to_owned(),
    })
}

impl Expr {
    pub fn eval(&self, _lookup: &dyn Fn(&str) -> Option<Value>) -> Result<bool, ExprError> {
        Err(ExprError {
            column: 1,
            message: format!("expressions are not built yet: {}", self.text),
        })
    }

    pub fn variables(&self) -> Vec<String> {
        Vec::new()
    }
}
