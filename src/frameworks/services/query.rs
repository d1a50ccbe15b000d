//! What Marathon's clients put in a `/v2` URL: query parameters (repeated ones, Python's
//! `True`/`False`), `embed` values, label selectors, and an app path's suffixes
//! (`/tasks/<id>`, `/versions/<v>`, `/restart`). Pure: parsed here, acted on in `http`.

use dcos_api::ApiError;
use dcos_core::app::normalize_app_id;
use std::collections::BTreeMap;

/// A request's query parameters, in order, repeated keys kept.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).last()
    }

    /// A boolean parameter: `true`/`false` in any case (Python clients send `True`), a bare
    /// `?force` counting as true; absent is `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter {name}: '{v}' is not true or false"
            ))),
        }
    }

    /// Whether `embed` asks for the apps' tasks (`apps.tasks`, `app.tasks`,
    /// `group.apps.tasks` or `tasks`). Other values (counts and deployments are always
    /// there) are ignored, as Marathon does.
    pub fn embeds_tasks(&self) -> bool {
        self.embeds("tasks")
    }

    /// Whether `embed` asks for the apps' `what` (`apps.<what>`, `app.<what>`,
    /// `group.apps.<what>` or `<what>`).
    pub fn embeds(&self, what: &str) -> bool {
        self.all("embed").any(|v| {
            v.strip_prefix("group.")
                .unwrap_or(v)
                .trim_start_matches("apps.")
                .trim_start_matches("app.")
                == what
        })
    }
}

/// What an app path under `/v2/apps/` names.
#[derive(Debug, PartialEq, Eq)]
pub enum AppPath {
    App(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

impl AppPath {
    /// Splits `rest` (what follows `/v2/apps/`, `//` tolerated) at the reserved segments app
    /// ids may not hold (`dcos_core::app::RESERVED_SEGMENTS`).
    pub fn parse(rest: &str) -> AppPath {
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let id = |n: usize| normalize_app_id(&format!("/{}", segments[..n].join("/")));
        let len = segments.len();
        match segments.as_slice() {
            [.., "tasks"] if len > 1 => AppPath::Tasks(id(len - 1)),
            [.., "tasks", task] if len > 2 => AppPath::Task(id(len - 2), task.to_string()),
            [.., "versions"] if len > 1 => AppPath::Versions(id(len - 1)),
            [.., "versions", version] if len > 2 => {
                AppPath::Version(id(len - 2), version.to_string())
            }
            [.., "restart"] if len > 1 => AppPath::Restart(id(len - 1)),
            _ => AppPath::App(id(len)),
        }
    }
}

/// Marathon's label selector (`label=` on `/v2/apps`): terms joined by commas, each
/// `key`, `key==value`, `key!=value`, `key in (a, b)` or `key notin (a, b)`; an app matches
/// when every term does.
#[derive(Debug, PartialEq, Eq)]
pub struct LabelSelector(Vec<Term>);

#[derive(Debug, PartialEq, Eq)]
enum Term {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "query parameter label: {why} in '{text}' (terms: key, key==value, key!=value, key in (a,b), key notin (a,b))"
            ))
        };
        // Commas separate terms except inside parentheses.
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            if depth < 0 {
                return Err(bad("an unopened ')'"));
            }
        }
        if depth != 0 {
            return Err(bad("an unclosed '('"));
        }
        terms.push(&text[start..]);
        let mut parsed = Vec::new();
        for term in terms.into_iter().map(str::trim) {
            if term.is_empty() {
                return Err(bad("an empty term"));
            }
            let set = |rest: &str| -> Result<Vec<String>, ApiError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad("a set needs (values)"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let term = if let Some((key, value)) = term.split_once("!=") {
                Term::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = term.split_once("==") {
                Term::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Term::NotIn(key.trim().into(), set(rest)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Term::In(key.trim().into(), set(rest)?)
            } else if term.contains(|c: char| c.is_whitespace() || "()=!".contains(c)) {
                return Err(bad("a term it cannot read"));
            } else {
                Term::Exists(term.to_string())
            };
            parsed.push(term);
        }
        Ok(LabelSelector(parsed))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Exists(key) => labels.contains_key(key),
            Term::Equals(key, value) => labels.get(key) == Some(value),
            Term::NotEquals(key, value) => labels.get(key) != Some(value),
            Term::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Term::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        })
    }
}

/// An error's field as Marathon's 422 `details[].path` writes it: `container.volumes[0].mode`
/// is `/container/volumes(0)/mode`.
pub fn marathon_path(field: &str) -> String {
    if field == "(root)" {
        return "/".to_string();
    }
    let mut path = String::from("/");
    for c in field.chars() {
        match c {
            '.' => path.push('/'),
            '[' => path.push('('),
            ']' => path.push(')'),
            other => path.push(other),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_read_every_term_form() {
        let web = labels(&[("tier", "web"), ("HAPROXY_GROUP", "external")]);
        let db = labels(&[("tier", "db")]);
        let cases = [
            ("tier", true, true),
            ("HAPROXY_GROUP", true, false),
            ("tier==web", true, false),
            ("tier!=web", false, true),
            ("tier in (web, cache)", true, false),
            ("tier notin (web,cache)", false, true),
            ("tier in (web,db),HAPROXY_GROUP==external", true, false),
            ("missing!=x", true, true),
        ];
        for (selector, on_web, on_db) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&web), on_web, "{selector} on web");
            assert_eq!(parsed.matches(&db), on_db, "{selector} on db");
        }
        for bad in ["", "tier in web", "tier in (web", "a b", "x,,y"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_paths_split_at_the_reserved_segments() {
        assert_eq!(AppPath::parse("shop/web"), AppPath::App("/shop/web".into()));
        assert_eq!(AppPath::parse("/web"), AppPath::App("/web".into()));
        assert_eq!(AppPath::parse("web/tasks"), AppPath::Tasks("/web".into()));
        assert_eq!(
            AppPath::parse("a/web/tasks/web.t1"),
            AppPath::Task("/a/web".into(), "web.t1".into())
        );
        assert_eq!(
            AppPath::parse("web/versions"),
            AppPath::Versions("/web".into())
        );
        assert_eq!(
            AppPath::parse("web/versions/2026-01-01T00:00:00.000Z"),
            AppPath::Version("/web".into(), "2026-01-01T00:00:00.000Z".into())
        );
        assert_eq!(
            AppPath::parse("web/restart"),
            AppPath::Restart("/web".into())
        );
        // A lone reserved word is an (invalid) app id, answered 404 by the handler.
        assert_eq!(AppPath::parse("tasks"), AppPath::App("/tasks".into()));
    }

    #[test]
    fn query_flags_take_python_booleans_and_embeds_take_every_prefix() {
        let params = Params::parse(Some(
            "force=True&scale=false&embed=apps.counts&embed=app.tasks",
        ));
        assert!(params.flag("force", false).unwrap());
        assert!(!params.flag("scale", true).unwrap());
        assert!(params.flag("wipe", true).unwrap());
        assert!(params.flag("x", false).is_ok());
        assert!(Params::parse(Some("force=yes"))
            .flag("force", false)
            .is_err());
        assert!(params.embeds_tasks());
        assert!(Params::parse(Some("embed=group.apps.tasks")).embeds_tasks());
        assert!(!Params::parse(Some("embed=apps.deployments")).embeds_tasks());
        assert!(Params::parse(Some("embed=app.readiness")).embeds("readiness"));
        assert_eq!(
            marathon_path("container.volumes[0].mode"),
            "/container/volumes(0)/mode"
        );
        assert_eq!(marathon_path("(root)"), "/");
    }
}
