//! Marathon's placement constraints, evaluated against an agent: `[field, operator, value?]`
//! where the field is `hostname` or an agent attribute (agent.toml `[attributes]`).
//!
//! - `UNIQUE`: no other task of the app on an agent with the same value.
//! - `CLUSTER v`: only agents whose value is `v`; without `v`, the value of the app's
//!   existing tasks (any, for the first).
//! - `GROUP_BY [n]`: spread evenly: an agent whose value holds no more of the app's tasks
//!   than the least used value among the open agents.
//! - `MAX_PER n`: fewer than `n` of the app's tasks per value.
//! - `IS v`: the value is `v`. `LIKE re` / `UNLIKE re`: the value matches (does not match)
//!   the regular expression as a whole.
//!
//! An agent without the attribute fails every operator but `UNLIKE`.

use crate::types::Agent;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Constraint {
    pub field: String,
    pub operator: String,
    pub value: Option<String>,
    regex: Option<regex_lite::Regex>,
}

impl Constraint {
    /// From the validated `[field, operator, value?]` of an app (see
    /// `services::fields::validate_constraints`); `None` for one that does not parse.
    pub fn parse(raw: &[String]) -> Option<Constraint> {
        let field = raw.first()?.clone();
        let operator = raw.get(1)?.to_ascii_uppercase();
        let value = raw.get(2).cloned();
        let regex = match operator.as_str() {
            "LIKE" | "UNLIKE" => Some(anchored(value.as_deref()?)?),
            _ => None,
        };
        Some(Constraint {
            field,
            operator,
            value,
            regex,
        })
    }

    /// `[hostname, UNIQUE]` as Marathon writes it.
    pub fn describe(&self) -> String {
        match &self.value {
            Some(value) => format!("[{}, {}, {value}]", self.field, self.operator),
            None => format!("[{}, {}]", self.field, self.operator),
        }
    }
}

/// The regular expression, matching whole values only; `None` if it does not compile.
pub fn anchored(pattern: &str) -> Option<regex_lite::Regex> {
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).ok()
}

/// The value of `field` on `agent`: its hostname or an attribute.
pub fn value_of<'a>(agent: &'a Agent, field: &str) -> Option<&'a str> {
    match field {
        "hostname" => Some(agent.hostname.as_str()),
        other => agent.attributes.get(other).map(String::as_str),
    }
}

/// How many of an app's live tasks each value of each constrained field holds.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    counts: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Spread {
    /// The spread of tasks on `agents` (one entry per task) over `constraints`' fields.
    pub fn of<'a>(constraints: &[Constraint], agents: impl Iterator<Item = &'a Agent>) -> Spread {
        let mut spread = Spread::default();
        for agent in agents {
            spread.add(constraints, agent);
        }
        spread
    }

    /// One more task on `agent`.
    pub fn add(&mut self, constraints: &[Constraint], agent: &Agent) {
        for constraint in constraints {
            if let Some(value) = value_of(agent, &constraint.field) {
                *self
                    .counts
                    .entry(constraint.field.clone())
                    .or_default()
                    .entry(value.to_string())
                    .or_default() += 1;
            }
        }
    }

    fn count(&self, field: &str, value: &str) -> usize {
        self.counts
            .get(field)
            .and_then(|c| c.get(value))
            .copied()
            .unwrap_or(0)
    }
}

/// The first constraint `agent` fails for one more task, given the app's `spread` and the
/// values of each field among the open agents (`open_values`, for GROUP_BY).
pub fn unmet<'a>(
    constraints: &'a [Constraint],
    spread: &Spread,
    agent: &Agent,
    open_values: &dyn Fn(&str) -> Vec<String>,
) -> Option<&'a Constraint> {
    constraints
        .iter()
        .find(|c| !allows(c, spread, agent, open_values))
}

fn allows(
    constraint: &Constraint,
    spread: &Spread,
    agent: &Agent,
    open_values: &dyn Fn(&str) -> Vec<String>,
) -> bool {
    let value = value_of(agent, &constraint.field);
    let Some(value) = value else {
        return constraint.operator == "UNLIKE";
    };
    let count = spread.count(&constraint.field, value);
    let wanted = constraint.value.as_deref();
    match constraint.operator.as_str() {
        "UNIQUE" => count == 0,
        "CLUSTER" => match wanted {
            Some(wanted) => value == wanted,
            None => spread
                .counts
                .get(&constraint.field)
                .and_then(|c| c.iter().max_by_key(|(_, n)| **n).map(|(v, _)| v.as_str()))
                .is_none_or(|held| held == value),
        },
        "GROUP_BY" => {
            let least = open_values(&constraint.field)
                .iter()
                .map(|v| spread.count(&constraint.field, v))
                .min()
                .unwrap_or(0);
            count <= least
        }
        "MAX_PER" => wanted
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|max| count < max),
        "IS" => wanted == Some(value),
        "LIKE" => constraint.regex.as_ref().is_some_and(|r| r.is_match(value)),
        "UNLIKE" => constraint.regex.as_ref().is_none_or(|r| !r.is_match(value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AgentState, Resources};

    fn agent(host: &str, rack: Option<&str>) -> Agent {
        Agent {
            id: host.into(),
            hostname: host.into(),
            url: String::new(),
            resources: Resources::default(),
            state: AgentState::Active,
            registered_at_ms: 0,
            ports: vec![],
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: rack
                .map(|r| BTreeMap::from([("rack".to_string(), r.to_string())]))
                .unwrap_or_default(),
        }
    }

    fn constraint(raw: &[&str]) -> Vec<Constraint> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        vec![Constraint::parse(&raw).expect("parses")]
    }

    /// Whether a further task may go to `candidate` with tasks already on `placed`.
    fn may(raw: &[&str], placed: &[&Agent], candidate: &Agent, open: &[&Agent]) -> bool {
        let constraints = constraint(raw);
        let spread = Spread::of(&constraints, placed.iter().copied());
        let open_values = |field: &str| -> Vec<String> {
            open.iter()
                .filter_map(|a| value_of(a, field).map(str::to_string))
                .collect()
        };
        unmet(&constraints, &spread, candidate, &open_values).is_none()
    }

    #[test]
    fn each_operator_decides_as_marathon_documents() {
        let (a, b, c) = (
            agent("a", Some("r1")),
            agent("b", Some("r1")),
            agent("c", Some("r2")),
        );
        let bare = agent("d", None);
        let open = [&a, &b, &c];
        // UNIQUE
        assert!(may(&["hostname", "UNIQUE"], &[&a], &b, &open));
        assert!(!may(&["hostname", "UNIQUE"], &[&a], &a, &open));
        assert!(!may(&["rack", "UNIQUE"], &[&a], &b, &open));
        // CLUSTER with and without a value
        assert!(may(&["rack", "CLUSTER", "r2"], &[], &c, &open));
        assert!(!may(&["rack", "CLUSTER", "r2"], &[], &a, &open));
        assert!(may(&["rack", "CLUSTER"], &[], &c, &open));
        assert!(may(&["rack", "CLUSTER"], &[&a], &b, &open));
        assert!(!may(&["rack", "CLUSTER"], &[&a], &c, &open));
        // GROUP_BY: the least used value first
        assert!(!may(&["rack", "GROUP_BY"], &[&a], &b, &open));
        assert!(may(&["rack", "GROUP_BY"], &[&a], &c, &open));
        assert!(may(&["rack", "GROUP_BY", "2"], &[&a, &c], &b, &open));
        // MAX_PER
        assert!(may(&["rack", "MAX_PER", "2"], &[&a], &b, &open));
        assert!(!may(&["rack", "MAX_PER", "2"], &[&a, &b], &b, &open));
        // IS, LIKE, UNLIKE (whole values)
        assert!(may(&["rack", "IS", "r1"], &[], &a, &open));
        assert!(!may(&["rack", "IS", "r1"], &[], &c, &open));
        assert!(may(&["rack", "LIKE", "r[12]"], &[], &c, &open));
        assert!(!may(&["rack", "LIKE", "r"], &[], &c, &open));
        assert!(!may(&["rack", "UNLIKE", "r2"], &[], &c, &open));
        assert!(may(&["rack", "UNLIKE", "r2"], &[], &a, &open));
        // An agent without the attribute fails all but UNLIKE.
        for op in [
            &["rack", "UNIQUE"][..],
            &["rack", "IS", "r1"],
            &["rack", "LIKE", ".*"],
            &["rack", "GROUP_BY"],
        ] {
            assert!(!may(op, &[], &bare, &open), "{op:?}");
        }
        assert!(may(&["rack", "UNLIKE", "r1"], &[], &bare, &open));
        assert!(Constraint::parse(&["rack".into(), "LIKE".into(), "(".into()]).is_none());
    }
}
