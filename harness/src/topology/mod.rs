//! Where the load comes from: this process (loopback, one client process, today's
//! default), several local agent processes (`--client-procs`), agents in client network
//! namespaces (`--topology netns`) or on other hosts over ssh (`--topology ssh`). Every
//! path beyond the first runs `harness agent` processes under one protocol ([`agent`]) and
//! merges their reports exactly ([`merge`]). Under ssh, `compare` also starts the server
//! on `--server-host` over ssh ([`SshServer`]).

pub mod agent;
pub mod merge;
pub mod netns;

use std::ffi::OsString;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::load::LoadConfig;
use agent::AgentLaunch;

/// Wall-clock nanoseconds since the epoch (0 before it): the unit clocks are exchanged in.
pub(crate) fn unix_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Another host's clock minus ours, from its reading `remote_ns` taken while we waited
/// between `sent_ns` and `received_ns`: taken at the round trip's middle, so it is off by
/// at most half the round trip.
pub(crate) fn clock_offset_ns(sent_ns: u64, remote_ns: u64, received_ns: u64) -> i64 {
    let mid = (sent_ns as i128 + received_ns as i128) / 2;
    (remote_ns as i128 - mid) as i64
}

/// Where the server and the load generators run.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// Server and load on this kernel's loopback, pinned to different cores.
    #[default]
    Loopback,
    /// A server namespace and `--clients` client namespaces joined by veth pairs, created
    /// for the run and always removed.
    Netns,
    /// Agents on other hosts (`--client-hosts`), started over ssh; under `compare` the
    /// server too, on `--server-host`, measured there.
    Ssh,
}

impl Topology {
    /// The name used on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Loopback => "loopback",
            Topology::Netns => "netns",
            Topology::Ssh => "ssh",
        }
    }
}

/// The options that say where the load comes from, shared by `compare` and `load`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// loopback (server and load on this kernel, the default), netns (a server namespace
    /// and --clients client namespaces joined by veth; needs root and `ip`; compare only) or
    /// ssh (agents on --client-hosts started over ssh; compare also starts the server on
    /// --server-host over ssh and measures it there).
    #[arg(long, value_enum, default_value = "loopback")]
    pub topology: Topology,
    /// Load agent processes per client (host or namespace): the client side is then bound
    /// neither by one process's RLIMIT_NOFILE nor by its threads. 1 under loopback runs the
    /// load in this process.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub client_procs: usize,
    /// Client namespaces under --topology netns.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub clients: usize,
    /// Rate limit of every veth link under --topology netns (tc tbf), e.g. 100mbit, 1gbit,
    /// 10mbps (bytes).
    #[arg(long, value_name = "RATE", value_parser = netns::parse_rate)]
    pub link_rate: Option<u64>,
    /// One-way delay on every veth link (tc netem), e.g. 10ms; needs sch_netem.
    #[arg(long, value_name = "TIME")]
    pub link_delay: Option<String>,
    /// Packet loss on every veth link (tc netem), e.g. 0.1%; needs sch_netem.
    #[arg(long, value_name = "PCT")]
    pub link_loss: Option<String>,
    /// Client hosts under --topology ssh, comma-separated ([user@]host); each runs
    /// --client-procs agents.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub client_hosts: Vec<String>,
    /// An ssh `-o` option for every ssh connection (Key=Value, e.g. Port=2222 or
    /// IdentityFile=~/.ssh/bench); repeatable. BatchMode=yes and ConnectTimeout=5 are
    /// always given first.
    #[arg(long, value_name = "KEY=VALUE")]
    pub ssh_opt: Vec<String>,
    /// Path of the harness binary on the client and server hosts [default: this binary's
    /// path].
    #[arg(long, value_name = "PATH")]
    pub remote_harness: Option<String>,
    /// The server host under `compare --topology ssh` ([user@]host): the server is started
    /// there over ssh, measured there (its --server-cores are that host's cores) and the
    /// agents aim at this host's address.
    #[arg(long, value_name = "[USER@]HOST")]
    pub server_host: Option<String>,
}

impl Default for ClientArgs {
    fn default() -> Self {
        ClientArgs {
            topology: Topology::Loopback,
            client_procs: 1,
            clients: 1,
            link_rate: None,
            link_delay: None,
            link_loss: None,
            client_hosts: Vec::new(),
            ssh_opt: Vec::new(),
            remote_harness: None,
            server_host: None,
        }
    }
}

impl ClientArgs {
    /// Checks the combination; the error names the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.client_procs >= 1, "--client-procs 0: give at least 1");
        anyhow::ensure!(
            (1..=64).contains(&self.clients),
            "--clients {}: give 1 to 64 client namespaces",
            self.clients
        );
        if self.topology == Topology::Ssh {
            anyhow::ensure!(
                !self.client_hosts.is_empty(),
                "--topology ssh: name the client hosts with --client-hosts a,b"
            );
            for o in &self.ssh_opt {
                anyhow::ensure!(
                    o.contains('=') && !o.starts_with('-'),
                    "--ssh-opt {o}: give an ssh -o option as Key=Value, e.g. Port=2222"
                );
            }
        } else {
            anyhow::ensure!(
                self.client_hosts.is_empty()
                    && self.ssh_opt.is_empty()
                    && self.remote_harness.is_none()
                    && self.server_host.is_none(),
                "--client-hosts, --server-host, --ssh-opt and --remote-harness apply to \
                 --topology ssh"
            );
        }
        if self.topology != Topology::Netns {
            anyhow::ensure!(self.clients == 1, "--clients applies to --topology netns");
            anyhow::ensure!(
                self.link_rate.is_none() && self.link_delay.is_none() && self.link_loss.is_none(),
                "--link-rate, --link-delay and --link-loss shape veth links: they need \
                 --topology netns"
            );
        }
        Ok(())
    }

    /// [`ClientArgs::validate`], and under `--topology ssh` the server host `compare`
    /// needs.
    pub fn validate_for_compare(&self) -> anyhow::Result<()> {
        if self.topology == Topology::Ssh {
            anyhow::ensure!(
                self.server_host.as_deref().is_some_and(|h| !h.is_empty()),
                "compare --topology ssh: name the host the server runs on with \
                 --server-host [user@]HOST (and the load hosts with --client-hosts)"
            );
        }
        self.validate()
    }

    /// [`ClientArgs::validate`] for `harness load`, which aims at a `--target` and starts
    /// no server.
    pub fn validate_for_load(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.server_host.is_none(),
            "--server-host applies to compare --topology ssh; harness load aims at --target"
        );
        self.validate()
    }

    /// The `ssh` command line that runs a command on `host`: `ssh -o BatchMode=yes -o
    /// ConnectTimeout=5 [-o OPT]… host`; the remote command's words follow.
    pub fn ssh_argv(&self, host: &str) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["ssh".into()];
        for o in ["BatchMode=yes", "ConnectTimeout=5"]
            .iter()
            .map(|s| s.to_string())
            .chain(self.ssh_opt.iter().cloned())
        {
            argv.push("-o".into());
            argv.push(o.into());
        }
        argv.push(host.into());
        argv
    }

    /// The harness binary on the remote hosts.
    pub fn remote_exe(&self) -> anyhow::Result<OsString> {
        match &self.remote_harness {
            Some(p) => Ok(p.into()),
            None => agent_exe(),
        }
    }

    /// True when the load runs in this process (loopback, one client process).
    pub fn in_process(&self) -> bool {
        self.topology == Topology::Loopback && self.client_procs == 1
    }

    /// Agents in all.
    pub fn agents(&self) -> usize {
        self.client_procs
            * if self.topology == Topology::Netns {
                self.clients
            } else {
                1
            }
    }
}

/// The harness binary agents run (this one).
pub fn agent_exe() -> anyhow::Result<OsString> {
    Ok(std::env::current_exe()
        .context("locating the harness executable for its agents")?
        .into_os_string())
}

/// Agents on the `--client-hosts`, `--client-procs` each, started with `ssh`.
pub fn ssh_launches(cfg: &LoadConfig, args: &ClientArgs) -> anyhow::Result<Vec<AgentLaunch>> {
    let remote = args.remote_exe()?;
    let procs = args.client_procs;
    let shares = merge::split(cfg, args.client_hosts.len() * procs)?;
    Ok(shares
        .into_iter()
        .enumerate()
        .map(|(i, config)| {
            let host = &args.client_hosts[i / procs];
            let mut argv = args.ssh_argv(host);
            argv.push(remote.clone());
            argv.push("agent".into());
            AgentLaunch {
                label: format!("ssh {host} proc {}", i % procs),
                argv,
                config,
            }
        })
        .collect())
}

/// How `compare --topology ssh` starts its server: the ssh command line up to the host,
/// the harness on that host, and the host's address part for the agents.
#[derive(Debug, Clone)]
pub struct SshServer {
    /// `ssh -o … [user@]host`.
    pub ssh: Vec<OsString>,
    /// The harness binary there (a shell word: `~` expands).
    pub remote_exe: OsString,
    /// `--server-host` as given, for labels.
    pub label: String,
    /// The host without `user@` (and without brackets around an IPv6 literal): the
    /// server's address is this with the port of its READY line.
    pub host: String,
}

impl SshServer {
    /// The ssh launch of `--server-host`.
    pub fn of(args: &ClientArgs) -> anyhow::Result<Option<SshServer>> {
        let Some(h) = args.server_host.as_deref() else {
            return Ok(None);
        };
        let host = h.rsplit_once('@').map_or(h, |(_, host)| host);
        Ok(Some(SshServer {
            ssh: args.ssh_argv(h),
            remote_exe: args.remote_exe()?,
            label: h.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        }))
    }

    /// The server's address: the host resolved, with the port the server printed.
    pub fn address(&self, port: u16) -> anyhow::Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        (self.host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving --server-host {}", self.label))?
            .next()
            .with_context(|| format!("--server-host {} has no address", self.label))
    }
}

/// A word for the remote shell ssh hands its command to: as is when it holds only
/// characters no shell treats specially, else single-quoted.
pub fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.,:=/@+-%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// `n` local agents on this kernel, each with its share of `cfg`.
pub fn local_launches(cfg: &LoadConfig, n: usize) -> anyhow::Result<Vec<AgentLaunch>> {
    let exe = agent_exe()?;
    Ok(merge::split(cfg, n)?
        .into_iter()
        .enumerate()
        .map(|(i, config)| AgentLaunch {
            label: format!("proc {i}"),
            argv: vec![exe.clone(), "agent".into()],
            config,
        })
        .collect())
}

/// Agents in client namespaces: `procs` per namespace, each aimed at the server address
/// its namespace reaches (`port` on the namespace's peer address).
pub fn netns_launches(
    cfg: &LoadConfig,
    net: &netns::Netns,
    procs: usize,
    port: u16,
) -> anyhow::Result<Vec<AgentLaunch>> {
    let exe = agent_exe()?;
    let n = net.clients().len() * procs;
    let shares = merge::split(cfg, n)?;
    let mut out = Vec::with_capacity(n);
    for (i, mut config) in shares.into_iter().enumerate() {
        let client = &net.clients()[i / procs];
        config.target = SocketAddr::from((client.server_ip, port));
        config.host = config.target.to_string();
        let mut argv: Vec<OsString> = ["ip", "netns", "exec"].map(OsString::from).to_vec();
        argv.push(client.ns.clone().into());
        argv.push(exe.clone());
        argv.push("agent".into());
        out.push(AgentLaunch {
            label: format!("netns {} proc {}", client.ns, i % procs),
            argv,
            config,
        });
    }
    Ok(out)
}

/// What `compare` knows about where each cell's load comes from: the options and, under
/// netns, the namespaces (created once for the whole run).
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    /// The options.
    pub args: &'a ClientArgs,
    /// The namespaces, under --topology netns.
    pub netns: Option<&'a netns::Netns>,
    /// The server host, under --topology ssh.
    pub ssh_server: Option<&'a SshServer>,
}

impl ClientSide<'_> {
    /// True when the load runs in this process.
    pub fn in_process(&self) -> bool {
        self.args.in_process()
    }

    /// Load processes the client side runs (1 in process).
    pub fn processes(&self) -> usize {
        self.args.agents()
    }

    /// How the server is started on `--server-host` (compare --topology ssh).
    pub fn server_ssh(&self) -> Option<&SshServer> {
        self.ssh_server
    }

    /// The namespace the server runs in, if any.
    pub fn server_netns(&self) -> Option<String> {
        self.netns.map(|n| n.server().to_string())
    }

    /// The agents for a run of `cfg` against a server listening on `port`.
    pub fn launches(&self, cfg: &LoadConfig, port: u16) -> anyhow::Result<Vec<AgentLaunch>> {
        match (self.netns, self.args.topology) {
            (Some(net), _) => netns_launches(cfg, net, self.args.client_procs, port),
            // The target (the server host's address and the server's port) is in `cfg`.
            (None, Topology::Ssh) => ssh_launches(cfg, self.args),
            (None, _) => local_launches(cfg, self.args.client_procs),
        }
    }

    /// The manifest's record of it.
    pub fn manifest(&self) -> crate::results::TopologyManifest {
        let a = self.args;
        let link = match (a.link_rate, &a.link_delay, &a.link_loss) {
            (None, None, None) => None,
            (Some(r), None, None) => Some(format!("tbf rate {r}bit")),
            (r, d, l) => Some(format!(
                "netem{}{}{}",
                d.as_ref()
                    .map(|d| format!(" delay {d}"))
                    .unwrap_or_default(),
                l.as_ref().map(|l| format!(" loss {l}")).unwrap_or_default(),
                r.map(|r| format!(" rate {r}bit")).unwrap_or_default()
            )),
        };
        crate::results::TopologyManifest {
            topology: a.topology,
            client_procs: a.client_procs,
            server_namespace: self.server_netns(),
            client_namespaces: self
                .netns
                .map(|n| n.clients().iter().map(|c| c.ns.clone()).collect())
                .unwrap_or_default(),
            link,
            server_host: a.server_host.clone(),
            client_hosts: a.client_hosts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_args(server_host: Option<&str>) -> ClientArgs {
        ClientArgs {
            topology: Topology::Ssh,
            client_hosts: vec!["a".into()],
            ssh_opt: vec!["Port=2222".into()],
            server_host: server_host.map(str::to_string),
            ..ClientArgs::default()
        }
    }

    #[test]
    fn compare_over_ssh_needs_a_server_host_and_load_refuses_one() {
        let e = ssh_args(None)
            .validate_for_compare()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--server-host"), "{e}");
        ssh_args(Some("u@srv")).validate_for_compare().unwrap();
        let e = ssh_args(Some("srv"))
            .validate_for_load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--server-host"), "{e}");
        let loopback = ClientArgs {
            server_host: Some("srv".into()),
            ..ClientArgs::default()
        };
        let e = loopback.validate_for_compare().unwrap_err().to_string();
        assert!(e.contains("--server-host"), "{e}");
    }

    #[test]
    fn the_server_host_shares_the_agents_ssh_command_line() {
        let mut args = ssh_args(Some("bench@[::1]"));
        args.remote_harness = Some("~/bin/harness".into());
        let s = SshServer::of(&args).unwrap().unwrap();
        assert_eq!(s.host, "::1");
        assert_eq!(s.label, "bench@[::1]");
        assert_eq!(s.ssh, args.ssh_argv("bench@[::1]"));
        let words: Vec<String> = s.ssh.iter().map(|w| w.to_string_lossy().into()).collect();
        assert_eq!(
            words,
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "Port=2222",
                "bench@[::1]"
            ]
        );
        assert_eq!(s.remote_exe, "~/bin/harness");
        assert_eq!(s.address(8080).unwrap(), "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("0.0.0.0:0"), "0.0.0.0:0");
        assert_eq!(
            shell_word("GLIBC_TUNABLES=glibc.cpu.x=1"),
            "GLIBC_TUNABLES=glibc.cpu.x=1"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
