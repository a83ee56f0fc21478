//! `/status` (HTML a person reads, refreshing itself, no JavaScript) and `/status.json`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::metrics::ListenerSnapshot;

/// How many one-second samples are kept: the 1-minute rates need 61.
const SAMPLES: usize = 61;

/// Counts sampled about once a second, for the rates over 10 s and 1 min.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    /// (when, per listener: accepted, requests)
    samples: VecDeque<(Instant, Vec<(u64, u64)>)>,
}

/// Per-second rates of one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Rate {
    pub(crate) accepted_10s: f64,
    pub(crate) accepted_1m: f64,
    pub(crate) requests_10s: f64,
    pub(crate) requests_1m: f64,
}

impl Rates {
    pub(crate) fn sample(&mut self, now: Instant, all: &[ListenerSnapshot]) {
        let counts = all.iter().map(|l| (l.accepted, l.requests)).collect();
        self.samples.push_back((now, counts));
        while self.samples.len() > SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The rates of listener `i`, from the samples and the counts now: over the oldest
    /// sample within each window (a shorter window while the server is younger).
    pub(crate) fn of(&self, i: usize, now: Instant, l: &ListenerSnapshot) -> Rate {
        let over = |window: Duration| -> (f64, f64) {
            let base = self.samples.iter().find(|(t, c)| {
                now.duration_since(*t) <= window + Duration::from_millis(500) && c.len() > i
            });
            match base {
                Some((t, c)) => {
                    let secs = now.duration_since(*t).as_secs_f64();
                    if secs < 0.5 {
                        return (0.0, 0.0);
                    }
                    let (a, r) = c[i];
                    (
                        l.accepted.saturating_sub(a) as f64 / secs,
                        l.requests.saturating_sub(r) as f64 / secs,
                    )
                }
                None => (0.0, 0.0),
            }
        };
        let (a10, r10) = over(Duration::from_secs(10));
        let (a60, r60) = over(Duration::from_secs(60));
        Rate {
            accepted_10s: a10,
            accepted_1m: a60,
            requests_10s: r10,
            requests_1m: r60,
        }
    }
}

fn html_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn json_escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A duration in seconds as a person reads it: "850 us", "12.5 ms", "1.20 s".
fn human_secs(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0} us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

fn human_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else {
        format!("{m}m {s}s")
    }
}

/// What the pages show about the whole process.
pub(crate) struct Overview<'a> {
    pub(crate) pid: u32,
    pub(crate) uptime: u64,
    pub(crate) live: bool,
    pub(crate) ready: bool,
    pub(crate) listeners: &'a [ListenerSnapshot],
    pub(crate) rates: Vec<Rate>,
}

/// `/status`: refreshes itself every 5 s with a `<meta>` refresh (no script).
pub(crate) fn status_html(o: &Overview<'_>) -> String {
    let mut h = String::with_capacity(4096);
    let state = match (o.ready, o.live) {
        (true, _) => "ready",
        (false, true) => "draining",
        (false, false) => "not serving",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>socketserver status</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         th,td{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}\
         th{{background:#eee}} td.l,th.l{{text-align:left}}\
         .ready{{color:#070}} .draining{{color:#a60}} .down{{color:#a00}}\
         </style></head><body>\n<h1>socketserver status</h1>\n\
         <p>version {} &middot; pid {} &middot; up {} &middot; \
         <strong class=\"{}\">{}</strong></p>\n",
        env!("CARGO_PKG_VERSION"),
        o.pid,
        human_uptime(o.uptime),
        match state {
            "ready" => "ready",
            "draining" => "draining",
            _ => "down",
        },
        state
    );
    for (l, r) in o.listeners.iter().zip(&o.rates) {
        h.push_str("<h2>");
        html_escape(&l.name, &mut h);
        let _ = write!(
            h,
            "</h2>\n<table>\n<tr><th class=\"l\">flavour</th><td class=\"l\">{}</td>\
             <th class=\"l\">state</th><td class=\"l\">{}</td></tr>\n</table>\n",
            l.flavor,
            match (l.ready, l.live) {
                (true, _) => "ready",
                (false, true) => "draining",
                _ => "not serving",
            }
        );
        let conn = if l.stream { "connections" } else { "datagrams" };
        let _ = write!(
            h,
            "<table>\n<tr><th>active</th><th>idle</th><th>limit</th><th>{conn} accepted</th>\
             <th>per s (10 s)</th><th>per s (1 min)</th></tr>\n\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>\n\
             </table>\n",
            l.connections_active,
            l.connections_idle,
            l.limit,
            l.accepted,
            r.accepted_10s,
            r.accepted_1m
        );
        let _ = write!(
            h,
            "<table>\n<tr><th>requests</th><th>per s (10 s)</th><th>per s (1 min)</th>\
             <th>in flight</th><th>p50</th><th>p99</th></tr>\n\
             <tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n\
             </table>\n",
            l.requests,
            r.requests_10s,
            r.requests_1m,
            l.in_flight,
            human_secs(l.request_duration.quantile(0.5)),
            human_secs(l.request_duration.quantile(0.99))
        );
        let rejected = l.rejected_verify
            + l.rejected_shutdown
            + l.rejected_fork
            + l.rejected_proxy
            + l.rejected_tls;
        let _ = write!(
            h,
            "<table>\n<tr><th>rejected</th><th>errors</th><th>panics</th>\
             <th>idle timeouts</th><th>request timeouts</th><th>accept errors</th>\
             <th>workers busy</th><th>workers idle</th><th>bytes in</th><th>bytes out</th></tr>\n\
             <tr><td>{rejected}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n</table>\n",
            l.handler_errors,
            l.panics,
            l.idle_timeouts,
            l.request_timeouts,
            l.accept_errors,
            l.workers.busy,
            l.workers.idle,
            l.received_bytes,
            l.sent_bytes
        );
    }
    if o.listeners.is_empty() {
        h.push_str("<p>No server watched yet.</p>\n");
    }
    h.push_str(
        "<p><a href=\"/metrics\">metrics</a> &middot; <a href=\"/status.json\">JSON</a> \
         &middot; this page refreshes every 5 s</p>\n</body></html>\n",
    );
    h
}

/// `/status.json`.
pub(crate) fn status_json(o: &Overview<'_>) -> String {
    let mut j = String::with_capacity(1024);
    let _ = write!(
        j,
        "{{\"pid\":{},\"version\":\"{}\",\"live\":{},\"ready\":{},\"uptime_seconds\":{},\"listeners\":[",
        o.pid,
        env!("CARGO_PKG_VERSION"),
        o.live,
        o.ready,
        o.uptime
    );
    for (i, (l, r)) in o.listeners.iter().zip(&o.rates).enumerate() {
        if i > 0 {
            j.push(',');
        }
        j.push_str("{\"name\":");
        json_escape(&l.name, &mut j);
        j.push_str(",\"address\":");
        json_escape(&l.address, &mut j);
        let q = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v}"));
        let _ = write!(
            j,
            ",\"flavor\":\"{}\",\"transport\":\"{}\",\"ready\":{},\"accepted\":{},\"active\":{},\
             \"idle\":{},\"limit\":{},\"requests\":{},\"in_flight\":{},\
             \"requests_per_second_10s\":{:.3},\"requests_per_second_1m\":{:.3},\
             \"accepted_per_second_10s\":{:.3},\"accepted_per_second_1m\":{:.3},\
             \"rejected\":{{\"verify\":{},\"shutdown\":{},\"fork_failed\":{},\"proxy_header\":{},\"tls_handshake\":{}}},\
             \"handler_errors\":{},\"panics\":{},\"timeouts\":{{\"idle\":{},\"request\":{}}},\
             \"received_bytes\":{},\"sent_bytes\":{},\"workers\":{{\"busy\":{},\"idle\":{}}},\
             \"request_duration_p50_seconds\":{},\"request_duration_p99_seconds\":{}}}",
            l.flavor,
            if l.stream { "stream" } else { "datagram" },
            l.ready,
            l.accepted,
            l.connections_active,
            l.connections_idle,
            l.limit,
            l.requests,
            l.in_flight,
            r.requests_10s,
            r.requests_1m,
            r.accepted_10s,
            r.accepted_1m,
            l.rejected_verify,
            l.rejected_shutdown,
            l.rejected_fork,
            l.rejected_proxy,
            l.rejected_tls,
            l.handler_errors,
            l.panics,
            l.idle_timeouts,
            l.request_timeouts,
            l.received_bytes,
            l.sent_bytes,
            l.workers.busy,
            l.workers.idle,
            q(l.request_duration.quantile(0.5)),
            q(l.request_duration.quantile(0.99)),
        );
    }
    j.push_str("]}\n");
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let mut h = String::new();
        html_escape("<a href=\"x\">&'", &mut h);
        assert_eq!(h, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let mut j = String::new();
        json_escape("a\"b\\c\nd\u{1}", &mut j);
        assert_eq!(j, "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_secs(None), "-");
        assert_eq!(human_secs(Some(0.00085)), "850 us");
        assert_eq!(human_secs(Some(0.0125)), "12.5 ms");
        assert_eq!(human_secs(Some(1.2)), "1.20 s");
        assert_eq!(human_uptime(3725), "1h 2m 5s");
    }
}
