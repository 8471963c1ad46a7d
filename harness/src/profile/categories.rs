//! The category table (`categories.toml`, committed beside this file) and the classifier
//! that sorts folded stacks into it. The rules are data: how they apply is described at the
//! top of the table, and `tests/profile_categories.rs` checks them on committed stacks.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The committed table.
pub const DEFAULT_TABLE: &str = include_str!("categories.toml");

/// Id of the category of samples no rule matches.
pub const UNMATCHED: &str = "unmatched";

/// Suffix inferno puts on kernel frames (`annotate_kernel`).
const KERNEL_SUFFIX: &str = "_[k]";

/// Which frames a category's patterns apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// Kernel frames only (those annotated `_[k]`).
    Kernel,
    /// User-space frames only.
    User,
    /// Both.
    #[default]
    Any,
}

/// One category as the table defines it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Stable id, used in JSON and file names.
    pub id: String,
    /// Label for charts and tables.
    pub label: String,
    /// Kernel, user or any frames.
    #[serde(default)]
    pub space: Space,
    /// Whole-name globs (`*` is the only wildcard).
    pub frames: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    transparent: Vec<String>,
    category: Vec<Category>,
}

/// A parsed category table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Frames passed over when classifying.
    pub transparent: Vec<String>,
    /// Categories in table (and chart) order, without the unmatched one.
    pub categories: Vec<Category>,
}

/// Samples of one stack's category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classified {
    /// Category id, or [`UNMATCHED`].
    pub category: String,
    /// The frame that decided it (without the kernel suffix); the leaf for unmatched ones.
    pub frame: String,
}

/// Folded counts per category over a set of folded stacks. The unit is the folded file's:
/// inferno weighs each perf sample by its period, so these are ns of sampled cpu-clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Count by category id; every category of the table is present, zero or not, and
    /// [`UNMATCHED`] last.
    pub by_category: Vec<(String, u64)>,
    /// Everything counted.
    pub total: u64,
    /// The leaf frames of unmatched samples, most frequent first (at most 15): where the
    /// table needs a rule.
    pub unmatched_leaves: Vec<(String, u64)>,
}

impl Counts {
    /// Samples of category `id` (0 when absent).
    pub fn get(&self, id: &str) -> u64 {
        self.by_category
            .iter()
            .find(|(c, _)| c == id)
            .map_or(0, |(_, n)| *n)
    }
}

impl Table {
    /// The committed table.
    pub fn default_table() -> anyhow::Result<Table> {
        Table::parse(DEFAULT_TABLE).context("the built-in categories.toml")
    }

    /// Parses a table in the format of `categories.toml`.
    pub fn parse(text: &str) -> anyhow::Result<Table> {
        let file: TableFile = toml::from_str(text).context("parsing the category table")?;
        let mut seen = std::collections::HashSet::new();
        for c in &file.category {
            if c.id == UNMATCHED {
                bail!("category id '{UNMATCHED}' is reserved for samples no rule matches");
            }
            if !seen.insert(c.id.clone()) {
                bail!("category id '{}' appears twice in the table", c.id);
            }
            if c.frames.is_empty() {
                bail!("category '{}' has no frame patterns", c.id);
            }
        }
        if file.category.is_empty() {
            bail!("the category table defines no [[category]]");
        }
        Ok(Table {
            transparent: file.transparent,
            categories: file.category,
        })
    }

    /// Category ids in chart order, [`UNMATCHED`] last.
    pub fn ids(&self) -> Vec<String> {
        self.categories
            .iter()
            .map(|c| c.id.clone())
            .chain(std::iter::once(UNMATCHED.to_string()))
            .collect()
    }

    /// The label of category `id`.
    pub fn label(&self, id: &str) -> String {
        self.categories
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| "unmatched by any rule".to_string(), |c| c.label.clone())
    }

    /// The category of one stack, given root first (the first frame, the thread's command
    /// name, is not matched).
    pub fn classify(&self, frames: &[&str]) -> Classified {
        for raw in frames.iter().skip(1).rev() {
            let (name, kernel) = match raw.strip_suffix(KERNEL_SUFFIX) {
                // Compiler clones: do_softirq.part.0, finish_task_switch.isra.0.
                Some(n) => (n.split_once('.').map_or(n, |(base, _)| base), true),
                None => (*raw, false),
            };
            if self.transparent.iter().any(|p| glob(p, name)) {
                continue;
            }
            for c in &self.categories {
                let applies = match c.space {
                    Space::Any => true,
                    Space::Kernel => kernel,
                    Space::User => !kernel,
                };
                if applies && c.frames.iter().any(|p| glob(p, name)) {
                    return Classified {
                        category: c.id.clone(),
                        frame: name.to_string(),
                    };
                }
            }
        }
        let leaf = frames.last().copied().unwrap_or("");
        Classified {
            category: UNMATCHED.to_string(),
            frame: leaf.strip_suffix(KERNEL_SUFFIX).unwrap_or(leaf).to_string(),
        }
    }

    /// Counts the samples of folded lines (`root;...;leaf COUNT`) by category. Blank lines
    /// are skipped; a line without a count is an error naming it.
    pub fn count_folded(&self, folded: &str) -> anyhow::Result<Counts> {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        let mut unmatched: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        for (i, line) in folded.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let (stack, n) = parse_folded_line(line)
                .with_context(|| format!("folded line {}: '{line}'", i + 1))?;
            let frames: Vec<&str> = stack.split(';').collect();
            let c = self.classify(&frames);
            if c.category == UNMATCHED {
                *unmatched.entry(c.frame).or_default() += n;
            }
            *by.entry(c.category).or_default() += n;
            total += n;
        }
        let mut leaves: Vec<(String, u64)> = unmatched.into_iter().collect();
        leaves.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        leaves.truncate(15);
        Ok(Counts {
            by_category: self
                .ids()
                .into_iter()
                .map(|id| {
                    let n = by.get(&id).copied().unwrap_or(0);
                    (id, n)
                })
                .collect(),
            total,
            unmatched_leaves: leaves,
        })
    }
}

/// Splits `stack COUNT`; the count is the last whitespace-separated field.
pub fn parse_folded_line(line: &str) -> anyhow::Result<(&str, u64)> {
    let (stack, n) = line
        .rsplit_once(' ')
        .context("a folded line is 'frame;frame;... COUNT'")?;
    let n = n
        .parse::<u64>()
        .with_context(|| format!("'{n}' is not a sample count"))?;
    Ok((stack, n))
}

/// Whole-string glob match where `*` matches any run of characters (possibly empty).
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("tcp_sendmsg", "tcp_sendmsg"));
        assert!(!glob("tcp_sendmsg", "tcp_sendmsg_locked"));
        assert!(glob("tcp_sendmsg*", "tcp_sendmsg_locked"));
        assert!(glob("*::session::*", "backend_api::session::http::parse"));
        assert!(!glob("*::session::*", "backend_api::sessions"));
        assert!(glob("a*b*c", "abc"));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-c-b"));
        // The suffix may not overlap what the prefix already took.
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("*", ""));
    }

    #[test]
    fn table_errors_name_the_problem() {
        let dup = "[[category]]\nid='a'\nlabel='A'\nframes=['x']\n[[category]]\nid='a'\nlabel='B'\nframes=['y']\n";
        assert!(Table::parse(dup)
            .unwrap_err()
            .to_string()
            .contains("'a' appears twice"));
        let reserved = "[[category]]\nid='unmatched'\nlabel='A'\nframes=['x']\n";
        assert!(Table::parse(reserved)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        let typo = "[[category]]\nid='a'\nlabel='A'\nframe=['x']\n";
        assert!(Table::parse(typo).is_err());
    }

    #[test]
    fn deepest_match_wins_and_transparent_frames_are_passed_over() {
        let t = Table::parse(
            "transparent=['thunk']\n\
             [[category]]\nid='outer'\nlabel='O'\nspace='kernel'\nframes=['outer']\n\
             [[category]]\nid='inner'\nlabel='I'\nspace='kernel'\nframes=['inner']\n\
             [[category]]\nid='user'\nlabel='U'\nspace='user'\nframes=['inner']\n",
        )
        .unwrap();
        let c = t.classify(&["comm", "outer_[k]", "inner_[k]", "thunk_[k]"]);
        assert_eq!((c.category.as_str(), c.frame.as_str()), ("inner", "inner"));
        // Compiler clone suffixes are cut from kernel names.
        assert_eq!(t.classify(&["comm", "outer.isra.0_[k]"]).category, "outer");
        // The same name in user space goes to the user category.
        assert_eq!(t.classify(&["comm", "inner"]).category, "user");
        // The command name never matches.
        assert_eq!(t.classify(&["outer"]).category, UNMATCHED);
        let counts = t
            .count_folded("comm;outer_[k] 3\ncomm;mystery_[k] 2\n\ncomm;x;inner_[k] 1\n")
            .unwrap();
        assert_eq!(counts.total, 6);
        assert_eq!(counts.get("outer"), 3);
        assert_eq!(counts.get(UNMATCHED), 2);
        assert_eq!(counts.unmatched_leaves, vec![("mystery".to_string(), 2)]);
        assert_eq!(counts.by_category.last().unwrap().0, UNMATCHED);
        assert!(t.count_folded("comm;outer_[k]\n").is_err());
    }

    #[test]
    fn the_committed_table_parses() {
        let t = Table::default_table().unwrap();
        assert!(t.categories.len() >= 12, "{}", t.categories.len());
    }
}
