//! Open loop at low load: the achieved rate is within 2% of the target.

mod util;

use std::time::Duration;

use backend_api::Service;
use harness::load::{run_load, Workload};
use util::*;

#[test]
fn achieved_rate_is_within_two_percent_of_target() {
    for (workload, service, rate) in [
        (Workload::Http, Service::Http, 2000.0),
        (Workload::Echo, Service::Echo, 1000.0),
        (Workload::Churn, Service::Http, 500.0),
    ] {
        let server = start(epoll_lt(), service);
        let mut cfg = config(&server, workload);
        cfg.workload.connections = 8;
        cfg.workload.rate = Some(rate);
        cfg.workload.warmup = Duration::from_millis(500);
        cfg.workload.duration = Duration::from_secs(3);
        let r = run_load(&cfg).unwrap();
        stop(server);
        let s = r.schedule.as_ref().unwrap();
        let summary = r.summary();
        assert!(r.errors.is_empty(), "{summary}");
        assert!(
            (s.achieved_ratio - 1.0).abs() <= 0.02,
            "{workload}: achieved {} of {rate}\n{summary}",
            s.achieved_rate
        );
        assert_eq!(r.requests.unsent, 0, "{summary}");
        assert_eq!(r.config.mode, "open");
        assert!(r.latency_uncorrected.is_some());
        assert!(!r.has_flag("rate_not_met"), "{summary}");
    }
}
