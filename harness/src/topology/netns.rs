//! `--topology netns`: a server namespace and client namespaces, each client joined to the
//! server by its own veth pair (10.201.I.1 on the server's end, 10.201.I.2 on the
//! client's), loopback up and the sysctls a load test needs set inside each, optional tc
//! shaping on every veth end.
//!
//! Every name carries the owner's pid (`rs-<pid>-srv`, `rs-<pid>-c0`, veths
//! `rs<pid>s0`/`rs<pid>c0`): at every start, namespaces and links whose owner is dead are
//! removed with the processes left in them, and [`Netns`] removes what it created when it
//! is dropped (a normal end, an error, a Ctrl-C that unwinds `compare`).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long one `ip` or `tc` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(15);

/// What netem's absence is reported as.
pub const NETEM_UNSUPPORTED: &str =
    "unsupported: sch_netem is not in this kernel (CONFIG_NET_SCH_NETEM)";

/// Sysctls set inside every namespace (each namespace starts from the kernel defaults).
const SYSCTLS: [(&str, &str); 4] = [
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.ip_local_port_range", "1024 65535"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
];

/// Link shaping on every veth end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shaping {
    /// tbf rate, bits per second.
    pub rate_bps: Option<u64>,
    /// netem delay, as tc takes it ("10ms").
    pub delay: Option<String>,
    /// netem loss, as tc takes it ("0.1%").
    pub loss: Option<String>,
}

impl Shaping {
    /// True when netem is needed.
    pub fn needs_netem(&self) -> bool {
        self.delay.is_some() || self.loss.is_some()
    }
}

/// One client namespace.
#[derive(Debug, Clone)]
pub struct ClientNs {
    /// Namespace name.
    pub ns: String,
    /// The server's address on this client's link.
    pub server_ip: Ipv4Addr,
    /// This client's address.
    pub client_ip: Ipv4Addr,
}

/// The namespaces of one run; dropping it removes them.
#[derive(Debug)]
pub struct Netns {
    owner: u32,
    server: String,
    clients: Vec<ClientNs>,
    created: Vec<String>,
}

/// Parses a tc-style rate into bits per second: `100mbit`, `1gbit`, `500kbit`, `800bit`,
/// or bytes per second with `bps`, `kbps`, `mbps`, `gbps` (tc's meaning).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': give a rate like 100mbit, 1gbit or 10mbps"))?;
    let mult = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}'; use bit, kbit, mbit, gbit (bits/s) or bps, kbps, \
                 mbps, gbps (bytes/s)"
            ))
        }
    };
    let bps = v * mult;
    if !(8000.0..=1e12).contains(&bps) {
        return Err(format!("'{s}': give a rate from 8kbit to 1000gbit"));
    }
    Ok(bps as u64)
}

/// Runs a command with a deadline; its stderr is the error.
fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("running {prog}: is iproute2 installed? (apt-get install iproute2)")
        })?;
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        if child.try_wait().context("waiting for a command")?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{prog} {} took over {CMD_TIMEOUT:?}; killed",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child
        .wait_with_output()
        .context("reading a command's output")?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip netns exec NS prog args…`.
fn inside(ns: &str, prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", ns, prog];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The owner pid in one of our names: `rs-<pid>-…` (namespaces) or `rs<pid>[sc]<n>` (veths).
fn owner_of(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("rs-") {
        return rest.split('-').next()?.parse().ok();
    }
    let rest = name.strip_prefix("rs")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let mut t = tail.chars();
    match t.next() {
        Some('s' | 'c') if !t.as_str().is_empty() && t.all(|c| c.is_ascii_digit()) => {
            digits.parse().ok()
        }
        _ => None,
    }
}

/// Namespaces of ours on this host, from `ip netns list`.
pub fn our_namespaces() -> anyhow::Result<Vec<String>> {
    Ok(run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("rs-") && owner_of(n).is_some())
        .map(str::to_string)
        .collect())
}

/// Links of ours left in this (the root) namespace.
pub fn our_links() -> anyhow::Result<Vec<String>> {
    Ok(run("ip", &["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| owner_of(n).is_some())
        .collect())
}

/// Removes one namespace: the processes still in it first, then the name.
fn remove_namespace(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Removes namespaces and links left by runs whose owner is dead; returns their names.
pub fn cleanup_stale() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in our_namespaces()? {
        if owner_of(&ns).is_some_and(|p| !pid_alive(p)) {
            remove_namespace(&ns);
            removed.push(ns);
        }
    }
    for link in our_links()? {
        if owner_of(&link).is_some_and(|p| !pid_alive(p)) {
            let _ = run("ip", &["link", "del", &link]);
            removed.push(link);
        }
    }
    Ok(removed)
}

impl Netns {
    /// Creates the server namespace and `clients` client namespaces, after removing what
    /// dead runs left. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip`.
    pub fn create(clients: usize, shaping: &Shaping) -> anyhow::Result<Netns> {
        let removed = cleanup_stale().context(
            "--topology netns needs root and iproute2 (`ip netns`); run as root, or use \
             --topology loopback",
        )?;
        if !removed.is_empty() && !crate::cli::quiet() {
            eprintln!("removed what earlier runs left: {}", removed.join(", "));
        }
        anyhow::ensure!(clients <= 64, "--clients {clients}: at most 64");
        let owner = std::process::id();
        let mut net = Netns {
            owner,
            server: format!("rs-{owner}-srv"),
            clients: Vec::new(),
            created: Vec::new(),
        };
        let server = net.server.clone();
        net.add_namespace(&server)?;
        for i in 0..clients {
            let ns = format!("rs-{owner}-c{i}");
            net.add_namespace(&ns)?;
            let (s_if, c_if) = (format!("rs{owner}s{i}"), format!("rs{owner}c{i}"));
            let (s_ip, c_ip) = (
                Ipv4Addr::new(10, 201, i as u8, 1),
                Ipv4Addr::new(10, 201, i as u8, 2),
            );
            run(
                "ip",
                &["link", "add", &s_if, "type", "veth", "peer", "name", &c_if],
            )
            .context("creating a veth pair (is the veth module available?)")?;
            // Until both ends are moved, the pair lives in the root namespace: a failure
            // here must not leave it behind.
            let moved = run("ip", &["link", "set", &s_if, "netns", &server])
                .and_then(|_| run("ip", &["link", "set", &c_if, "netns", &ns]));
            if let Err(e) = moved {
                let _ = run("ip", &["link", "del", &s_if]);
                return Err(e);
            }
            inside(
                &server,
                "ip",
                &["addr", "add", &format!("{s_ip}/30"), "dev", &s_if],
            )?;
            inside(
                &ns,
                "ip",
                &["addr", "add", &format!("{c_ip}/30"), "dev", &c_if],
            )?;
            inside(&server, "ip", &["link", "set", &s_if, "up"])?;
            inside(&ns, "ip", &["link", "set", &c_if, "up"])?;
            net.shape(&server, &s_if, shaping)?;
            net.shape(&ns, &c_if, shaping)?;
            net.clients.push(ClientNs {
                ns,
                server_ip: s_ip,
                client_ip: c_ip,
            });
        }
        Ok(net)
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "add", ns])
            .context("creating a network namespace: --topology netns needs root (CAP_SYS_ADMIN)")?;
        self.created.push(ns.to_string());
        inside(ns, "ip", &["link", "set", "lo", "up"])?;
        for (k, v) in SYSCTLS {
            inside(ns, "sysctl", &["-q", "-w", &format!("{k}={v}")])?;
        }
        Ok(())
    }

    fn shape(&self, ns: &str, dev: &str, s: &Shaping) -> anyhow::Result<()> {
        if s.needs_netem() {
            probe_netem(ns)?;
            let mut args = vec!["qdisc", "add", "dev", dev, "root", "netem"];
            if let Some(d) = &s.delay {
                args.extend(["delay", d.as_str()]);
            }
            if let Some(l) = &s.loss {
                args.extend(["loss", l.as_str()]);
            }
            let rate;
            if let Some(r) = s.rate_bps {
                rate = format!("{r}bit");
                args.extend(["rate", rate.as_str()]);
            }
            inside(ns, "tc", &args)?;
        } else if let Some(r) = s.rate_bps {
            // The bucket holds at least 10 ms at the rate (a timer tick) and 32 KiB (tbf
            // splits larger GSO packets to fit); the queue holds 50 ms.
            let burst = (r / 8 / 100).max(32 * 1024);
            inside(
                ns,
                "tc",
                &[
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{r}bit"),
                    "burst",
                    &burst.to_string(),
                    "latency",
                    "50ms",
                ],
            )
            .context("adding the tbf rate limit (--link-rate)")?;
        }
        Ok(())
    }

    /// The server's namespace.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client namespaces.
    pub fn clients(&self) -> &[ClientNs] {
        &self.clients
    }

    /// The pid whose death marks these names stale.
    pub fn owner(&self) -> u32 {
        self.owner
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Checks that `tc` can add a netem qdisc, in a scratch namespace's loopback.
pub fn probe_netem(ns: &str) -> anyhow::Result<()> {
    match inside(
        ns,
        "tc",
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    ) {
        Ok(_) => {
            let _ = inside(ns, "tc", &["qdisc", "del", "dev", "lo", "root"]);
            Ok(())
        }
        Err(e) if format!("{e:#}").contains("unknown") => {
            bail!("--link-delay/--link-loss: {NETEM_UNSUPPORTED}")
        }
        Err(e) => Err(e.context("probing sch_netem")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_tc_units() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("10mbps"), Ok(80_000_000));
        assert_eq!(parse_rate("2.5mbit"), Ok(2_500_000));
        assert!(parse_rate("10").unwrap_err().contains("unknown unit"));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1bit").unwrap_err().contains("8kbit"));
    }

    #[test]
    fn owners_are_read_from_our_names_only() {
        assert_eq!(owner_of("rs-123-srv"), Some(123));
        assert_eq!(owner_of("rs-9-c10"), Some(9));
        assert_eq!(owner_of("rs123s0"), Some(123));
        assert_eq!(owner_of("rs123c12"), Some(123));
        assert_eq!(owner_of("rsx"), None);
        assert_eq!(owner_of("rs123"), None);
        assert_eq!(owner_of("eth0"), None);
        assert_eq!(owner_of("rs-abc-srv"), None);
    }
}
