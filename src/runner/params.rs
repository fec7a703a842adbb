//! Strict query strings: every route names the parameters it takes, and an
//! unknown parameter, a parameter given twice (unless it may repeat) or a
//! value out of range is an error that names the parameter, rather than
//! being ignored.

use axum::extract::Query;
use axum::http::Uri;

use super::error::RunnerError;

/// The decoded parameters of one request.
#[derive(Debug)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `uri`'s query string; `allowed` lists the names it may
    /// carry (for the error message too), `repeatable` those that may come
    /// more than once.
    pub(crate) fn parse(
        uri: &Uri,
        allowed: &'static str,
        repeatable: &[&str],
    ) -> Result<Params, RunnerError> {
        let pairs = match uri.query() {
            None => Vec::new(),
            Some(_) => {
                Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map_err(|_| RunnerError::BadQuery)?
                    .0
            }
        };
        let names: Vec<&str> = allowed.split(", ").collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !names.contains(&name.as_str()) {
                return Err(RunnerError::UnknownParameter {
                    name: name.clone(),
                    allowed,
                });
            }
            if !repeatable.contains(&name.as_str()) && pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(RunnerError::RepeatedParameter(name.clone()));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub(crate) fn number(
        &self,
        name: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, RunnerError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(bad(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    /// A non-empty text, if given.
    pub(crate) fn text(&self, name: &str) -> Result<Option<&str>, RunnerError> {
        match self.get(name) {
            Some("") => Err(bad(name, "must not be empty".into())),
            other => Ok(other),
        }
    }
}

/// The error for parameter `name` and what is wrong with it.
pub(crate) fn bad(name: &str, problem: String) -> RunnerError {
    RunnerError::BadParameter {
        name: name.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Params, RunnerError> {
        let uri: Uri = format!("/x?{q}").parse().unwrap();
        Params::parse(&uri, "limit, job", &["job"])
    }

    #[test]
    fn strict_parameters() {
        let p = parse("limit=5&job=a&job=b").unwrap();
        assert_eq!(p.number("limit", 1, 10, 3).unwrap(), 5);
        assert_eq!(p.all("job").collect::<Vec<_>>(), ["a", "b"]);
        assert!(matches!(
            parse("limit=1&limit=2"),
            Err(RunnerError::RepeatedParameter(n)) if n == "limit"
        ));
        assert!(matches!(
            parse("nope=1"),
            Err(RunnerError::UnknownParameter { name, .. }) if name == "nope"
        ));
        for bad in ["limit=0", "limit=11", "limit=x", "limit=", "limit=-1"] {
            let p = parse(bad).unwrap();
            let e = p.number("limit", 1, 10, 3).unwrap_err();
            assert!(e.to_string().contains("\"limit\""), "{e}");
        }
        assert_eq!(parse("").unwrap().number("limit", 1, 10, 3).unwrap(), 3);
    }
}
