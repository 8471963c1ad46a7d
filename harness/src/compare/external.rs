//! External servers as backends: a user's command (nginx, a C program) that `compare`
//! starts, measures and stops beside the built-in backends.
//!
//! Written `NAME=COMMAND` (speaks HTTP) or `NAME:SERVICES=COMMAND` with SERVICES one or
//! more of `echo`, `http` (comma-separated), on the command line; `[[external]]` with
//! `name`, `command` and `service` in a suite. The command is split into words with POSIX
//! shell quoting rules but run without a shell (write `sh -c '...'` to have one); then
//! `{addr}`, `{port}` and `{cores}` in each word are replaced by the address and port the
//! harness chose and the server cores as a CPU list (`{{` and `}}` are literal braces).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use backend_api::Service;
use serde::Deserialize;

/// Placeholders a command may use.
pub const PLACEHOLDERS: [&str; 3] = ["addr", "port", "cores"];

/// One external server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// Name in results, reports and plots; distinct from every built-in backend.
    pub name: String,
    /// The command template, as given.
    pub command: String,
    /// The services it speaks.
    pub services: Vec<Service>,
}

/// `[[external]]` in a suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalEntry {
    /// Name of the server in results.
    pub name: String,
    /// Command template (see the module docs).
    pub command: String,
    /// Service(s) it speaks: "http" (the default), "echo", or a list of both.
    pub service: Option<super::suite::OneOrMany<String>>,
}

impl ExternalEntry {
    /// Checks the entry and makes it an [`External`].
    pub fn into_external(self) -> anyhow::Result<External> {
        let services = match &self.service {
            None => vec![Service::Http],
            Some(s) => parse_services(&s.values())
                .with_context(|| format!("[[external]] {}: service", self.name))?,
        };
        External::new(self.name, self.command, services)
    }
}

fn parse_services(names: &[String]) -> anyhow::Result<Vec<Service>> {
    if names.is_empty() {
        bail!("name at least one service (echo, http)");
    }
    let mut v: Vec<Service> = Vec::new();
    for n in names {
        let s: Service = n.trim().parse().map_err(anyhow::Error::msg)?;
        if !v.contains(&s) {
            v.push(s);
        }
    }
    Ok(v)
}

impl External {
    /// An external server; checks the name and the command's placeholders.
    pub fn new(name: String, command: String, services: Vec<Service>) -> anyhow::Result<External> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if name.is_empty() || !name.chars().all(ok_char) {
            bail!(
                "external server name '{name}': use letters, digits, '.', '_' and '-' \
                 (e.g. nginx=COMMAND)"
            );
        }
        if crate::registry::find(&name).is_ok() {
            bail!(
                "external server name '{name}' is a built-in backend's (see `harness list`); \
                 choose another name, e.g. {name}-ext"
            );
        }
        let ext = External {
            name,
            command,
            services,
        };
        // Fail before any cell runs: a typo in a placeholder would fail every cell.
        ext.argv(SocketAddr::from(([127, 0, 0, 1], 1)), "0")
            .with_context(|| format!("external server {}", ext.name))?;
        Ok(ext)
    }

    /// Whether it speaks `service`.
    pub fn speaks(&self, service: Service) -> bool {
        self.services.contains(&service)
    }

    /// The services as "echo,http".
    pub fn services_list(&self) -> String {
        let v: Vec<&str> = self.services.iter().map(|s| s.as_str()).collect();
        v.join(",")
    }

    /// The command's words with the placeholders filled in.
    pub fn argv(&self, addr: SocketAddr, cores: &str) -> anyhow::Result<Vec<String>> {
        let words = shlex::split(&self.command).with_context(|| {
            format!(
                "command `{}` has an unclosed quote or a trailing backslash",
                self.command
            )
        })?;
        if words.is_empty() {
            bail!("the command is empty; give NAME=COMMAND, e.g. nginx=scripts/external/nginx.sh {{port}} {{cores}}");
        }
        let port = addr.port().to_string();
        let addr = addr.to_string();
        words
            .iter()
            .map(|w| fill(w, &[("addr", &addr), ("port", &port), ("cores", cores)]))
            .collect()
    }
}

impl std::str::FromStr for External {
    type Err = anyhow::Error;

    /// `NAME=COMMAND` or `NAME:SERVICES=COMMAND`.
    fn from_str(arg: &str) -> anyhow::Result<External> {
        let Some((head, command)) = arg.split_once('=') else {
            bail!(
                "--external {arg}: give NAME=COMMAND or NAME:SERVICES=COMMAND, e.g. \
                 --external 'nginx:http=scripts/external/nginx.sh {{port}} {{cores}}'"
            );
        };
        let (name, services) = match head.split_once(':') {
            Some((name, list)) => {
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                (
                    name,
                    parse_services(&names).with_context(|| format!("--external {head}"))?,
                )
            }
            None => (head, vec![Service::Http]),
        };
        External::new(
            name.trim().to_string(),
            command.trim().to_string(),
            services,
        )
        .context("--external")
    }
}

/// Replaces `{name}` by its value in `word`; `{{` and `}}` are literal braces.
fn fill(word: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = t;
            continue;
        }
        if tail.starts_with('}') {
            bail!("unmatched '}}' in `{word}`; write '}}}}' for a literal brace");
        }
        let Some(end) = tail.find('}') else {
            bail!("unclosed '{{' in `{word}`; write '{{{{' for a literal brace");
        };
        let key = &tail[1..end];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None => bail!(
                "unknown placeholder {{{key}}} in `{word}`; valid placeholders: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn placeholders_fill_each_word_and_quotes_group_words() {
        let e: External = "srv=./srv --listen {addr} -p {port} 'a b' {{x}} --cpus={cores}"
            .parse()
            .unwrap();
        assert_eq!(e.services, vec![Service::Http]);
        assert_eq!(
            e.argv(addr(), "0-1").unwrap(),
            [
                "./srv",
                "--listen",
                "127.0.0.1:8080",
                "-p",
                "8080",
                "a b",
                "{x}",
                "--cpus=0-1"
            ]
        );
    }

    #[test]
    fn services_are_named_after_the_name() {
        let e: External = "c:echo,http=./c {port}".parse().unwrap();
        assert_eq!(e.services, vec![Service::Echo, Service::Http]);
        assert!(e.speaks(Service::Echo));
        let e: External = "c:echo=./c {port}".parse().unwrap();
        assert!(!e.speaks(Service::Http));
        let err = format!("{:#}", "c:ftp=./c".parse::<External>().unwrap_err());
        assert!(err.contains("valid services: echo, http"), "{err}");
    }

    #[test]
    fn bad_input_names_the_fix() {
        let err = |s: &str| format!("{:#}", s.parse::<External>().unwrap_err());
        let e = err("srv=./srv {prot}");
        assert!(
            e.contains("unknown placeholder {prot}") && e.contains("{addr}, {port}, {cores}"),
            "{e}"
        );
        assert!(err("srv").contains("NAME=COMMAND"));
        assert!(err("srv=").contains("command is empty"));
        assert!(err("srv=./a 'b").contains("unclosed quote"));
        assert!(err("srv=./a {port").contains("unclosed '{'"));
        let e = err("epoll-et=./a");
        assert!(
            e.contains("built-in backend") && e.contains("epoll-et-ext"),
            "{e}"
        );
        assert!(err("a b=./a").contains("letters, digits"));
    }

    #[test]
    fn suite_entries_default_to_http() {
        let e = ExternalEntry {
            name: "n".into(),
            command: "./n {port}".into(),
            service: None,
        };
        assert_eq!(e.into_external().unwrap().services, vec![Service::Http]);
        let e = ExternalEntry {
            name: "n".into(),
            command: "./n {port}".into(),
            service: Some(super::super::suite::OneOrMany::Many(vec![
                "echo".into(),
                "http".into(),
            ])),
        };
        assert_eq!(e.into_external().unwrap().services_list(), "echo,http");
    }
}
