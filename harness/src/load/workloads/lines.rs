//! Test only: a workload written the way a new one would be, to show that a workload is
//! this one file plus one line in the `workloads!` list. Each request is a short text
//! line with a running number; an echo server must return it unchanged.

use super::{Connect, Defaults, Eof, Facts, Plugin, Sending};
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// The lines workload: no shared data.
#[derive(Debug)]
pub(crate) struct Lines;

/// One connection: lines sent, and the bytes of the reply line read so far.
#[derive(Debug, Default)]
pub(crate) struct LinesConn {
    sent: u64,
    received: u64,
    partial: Vec<u8>,
}

fn line(n: u64) -> String {
    format!("line {n}\n")
}

impl Plugin for Lines {
    const FACTS: Facts = Facts {
        title: "lines",
        describe: |_, depth| format!("text lines echoed, depth {depth}"),
        service: backend_api::Service::Echo,
        connect: Connect::KeepAlive,
        sending: Sending::Requests,
        sized: false,
        holds_idle: false,
        paced: true,
        conn_rate: None,
        defaults: Defaults {
            connections: 4,
            depth: 2,
            size: 0,
            idle: 0,
        },
    };
    type Conn = LinesConn;

    fn new(_cfg: &LoadConfig) -> Lines {
        Lines
    }

    fn conn(&self, _seed: u64) -> LinesConn {
        LinesConn::default()
    }

    fn request(&self, c: &mut LinesConn, out: &mut Vec<u8>) {
        out.extend_from_slice(line(c.sent).as_bytes());
        c.sent += 1;
    }

    fn feed(
        &self,
        c: &mut LinesConn,
        data: &[u8],
        mut outstanding: usize,
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        for &b in data {
            if outstanding == 0 {
                return Err(ClientError::UnsolicitedData);
            }
            c.partial.push(b);
            if b == b'\n' {
                if c.partial != line(c.received).as_bytes() {
                    return Err(ClientError::EchoMismatch);
                }
                c.partial.clear();
                c.received += 1;
                outstanding -= 1;
                on_reply(None);
            }
        }
        Ok(())
    }

    fn on_eof(&self, c: &mut LinesConn) -> Result<Eof, ClientError> {
        if c.partial.is_empty() {
            Ok(Eof::Nothing)
        } else {
            Err(ClientError::ShortReply)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use backend_api::runner::{self, ServerConfig};

    use crate::load::{run_load, LoadConfig, Workload};

    #[test]
    fn a_workload_in_one_file_runs_against_a_backend() {
        let cores = runner::usable_cores();
        let server = runner::start(
            Arc::new(backend_epoll::EpollEt),
            ServerConfig::new(Workload::Lines.service(), vec![cores[0]]),
        )
        .unwrap();
        let mut cfg = LoadConfig::new(server.local_addr(), Workload::Lines);
        cfg.cores = vec![*cores.last().unwrap()];
        cfg.workload.warmup = Duration::from_millis(50);
        cfg.workload.duration = Duration::from_millis(300);
        cfg.workload.requests = Some(200);
        let report = run_load(&cfg).unwrap();
        let stats = server.stop().unwrap().total;
        assert_eq!(report.errors_total, 0, "{:?}", report.errors);
        assert_eq!(report.requests.completed, 200);
        assert_eq!(report.config.workload, Workload::Lines);
        // Every byte the generator wrote came back, and the server saw exactly that.
        assert_eq!(report.totals.bytes_out, report.totals.bytes_in);
        assert_eq!(stats.bytes_in, report.totals.bytes_out);
    }
}
