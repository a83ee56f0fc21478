//! The exposition: Prometheus text 0.0.4 and OpenMetrics 1.0, written by hand (the format
//! is small). Each family is written once, with every server's samples under it.

use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;
use super::snapshot::ListenerSnapshot;

/// The two exposition formats, chosen per scrape by the scraper's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsFormat {
    /// Prometheus text format 0.0.4, what every scraper reads.
    Prometheus,
    /// OpenMetrics 1.0 text: counters typed without their `_total`, units declared, the
    /// body ended by `# EOF`.
    OpenMetrics,
}

impl MetricsFormat {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            MetricsFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics when it asks for
    /// `application/openmetrics-text` with a higher quality (`q`) than anything the text
    /// format answers (`text/plain`, `*/*`), else the text format.
    ///
    /// ```
    /// use socketserver::MetricsFormat;
    ///
    /// // What Prometheus sends.
    /// let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
    ///     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// assert_eq!(MetricsFormat::from_accept(prometheus), MetricsFormat::OpenMetrics);
    /// assert_eq!(MetricsFormat::from_accept("text/plain"), MetricsFormat::Prometheus);
    /// assert_eq!(MetricsFormat::from_accept(""), MetricsFormat::Prometheus);
    /// ```
    pub fn from_accept(accept: &str) -> MetricsFormat {
        let (mut open, mut text) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0;
            for p in parts {
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    q = v.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open > text {
            MetricsFormat::OpenMetrics
        } else {
            MetricsFormat::Prometheus
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels are the information (`_info`).
    Info,
}

/// The writer of one exposition.
struct Out {
    s: String,
    format: MetricsFormat,
}

/// Escapes HELP text: `\` and newline (and, for OpenMetrics, `"`).
fn escape_help(text: &str, format: MetricsFormat, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == MetricsFormat::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Escapes a label value: `\`, `"` and newline.
pub(crate) fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float as both formats read it (`+Inf`, `NaN`, else the shortest exact decimal).
fn float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

enum Value {
    Int(u64),
    Float(f64),
}

impl Out {
    /// Writes a family's metadata. `name` is the family's name without `_total` (counters)
    /// or `_info` (info); `unit` is the last word of the name, for OpenMetrics' `# UNIT`.
    fn family(&mut self, name: &str, kind: Kind, help: &str, unit: Option<&str>) {
        let om = self.format == MetricsFormat::OpenMetrics;
        let (shown, typ) = match (kind, om) {
            (Kind::Counter, false) => (format!("{name}_total"), "counter"),
            (Kind::Counter, true) => (name.to_string(), "counter"),
            (Kind::Gauge, _) => (name.to_string(), "gauge"),
            (Kind::Histogram, _) => (name.to_string(), "histogram"),
            (Kind::Info, false) => (format!("{name}_info"), "gauge"),
            (Kind::Info, true) => (name.to_string(), "info"),
        };
        let _ = write!(self.s, "# HELP {shown} ");
        escape_help(help, self.format, &mut self.s);
        let _ = writeln!(self.s, "\n# TYPE {shown} {typ}");
        if let (true, Some(unit)) = (om, unit) {
            let _ = writeln!(self.s, "# UNIT {shown} {unit}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.s.push_str(name);
        if !labels.is_empty() {
            self.s.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.s.push(',');
                }
                self.s.push_str(k);
                self.s.push_str("=\"");
                escape_label(v, &mut self.s);
                self.s.push('"');
            }
            self.s.push('}');
        }
        self.s.push(' ');
        match value {
            Value::Int(n) => {
                let _ = write!(self.s, "{n}");
            }
            Value::Float(f) => float(f, &mut self.s),
        }
        self.s.push('\n');
    }

    /// A counter family, one sample per server (and per extra label value).
    fn counter(
        &mut self,
        all: &[&ListenerSnapshot],
        name: &str,
        help: &str,
        unit: Option<&str>,
        label: Option<&str>,
        values: impl Fn(&ListenerSnapshot) -> Vec<(&'static str, u64)>,
    ) {
        if all.is_empty() {
            return;
        }
        self.family(name, Kind::Counter, help, unit);
        let sample = format!("{name}_total");
        for l in all {
            for (v, n) in values(l) {
                match label {
                    Some(key) => {
                        self.sample(&sample, &[("listener", &l.name), (key, v)], Value::Int(n))
                    }
                    None => self.sample(&sample, &[("listener", &l.name)], Value::Int(n)),
                }
            }
        }
    }

    /// A gauge family with one sample per server.
    fn gauge(
        &mut self,
        all: &[&ListenerSnapshot],
        name: &str,
        help: &str,
        unit: Option<&str>,
        value: impl Fn(&ListenerSnapshot) -> Option<Value>,
    ) {
        let values: Vec<_> = all.iter().filter_map(|l| Some((l, value(l)?))).collect();
        if values.is_empty() {
            return;
        }
        self.family(name, Kind::Gauge, help, unit);
        for (l, v) in values {
            self.sample(name, &[("listener", &l.name)], v);
        }
    }

    fn histogram(
        &mut self,
        all: &[&ListenerSnapshot],
        name: &str,
        help: &str,
        get: impl Fn(&ListenerSnapshot) -> &HistogramSnapshot,
    ) {
        if all.is_empty() {
            return;
        }
        self.family(name, Kind::Histogram, help, Some("seconds"));
        let (bucket, count, sum) = (
            format!("{name}_bucket"),
            format!("{name}_count"),
            format!("{name}_sum"),
        );
        let mut le = String::new();
        for l in all {
            let h = get(l);
            for (i, &c) in h.cumulative.iter().enumerate() {
                le.clear();
                float(h.bounds.get(i).copied().unwrap_or(f64::INFINITY), &mut le);
                self.sample(
                    &bucket,
                    &[("listener", &l.name), ("le", &le)],
                    Value::Int(c),
                );
            }
            self.sample(&count, &[("listener", &l.name)], Value::Int(h.count()));
            self.sample(&sum, &[("listener", &l.name)], Value::Float(h.sum));
        }
    }
}

/// The exposition of `listeners` in `format`.
pub(crate) fn render(listeners: &[ListenerSnapshot], format: MetricsFormat) -> String {
    let mut o = Out {
        s: String::with_capacity(4096 + 3072 * listeners.len()),
        format,
    };
    let all: Vec<&ListenerSnapshot> = listeners.iter().collect();
    let streams: Vec<&ListenerSnapshot> = listeners.iter().filter(|l| l.stream).collect();
    let dgrams: Vec<&ListenerSnapshot> = listeners.iter().filter(|l| !l.stream).collect();
    let tls: Vec<&ListenerSnapshot> = listeners.iter().filter(|l| l.tls).collect();
    let version = env!("CARGO_PKG_VERSION");

    if !all.is_empty() {
        o.family(
            "socketserver_build",
            Kind::Info,
            "The socketserver crate's version and the server's flavour.",
            None,
        );
        for l in &all {
            o.sample(
                "socketserver_build_info",
                &[
                    ("listener", &l.name),
                    ("version", version),
                    ("flavor", l.flavor),
                ],
                Value::Int(1),
            );
        }
    }
    o.gauge(
        &all,
        "socketserver_start_time_seconds",
        "When the server started serving, in seconds since the Unix epoch.",
        Some("seconds"),
        |l| l.started.map(Value::Float),
    );
    o.gauge(
        &all,
        "socketserver_ready",
        "1 while the server serves and accepts, 0 from the moment shutdown (or a restart's drain) begins.",
        None,
        |l| Some(Value::Int(l.ready as u64)),
    );
    o.counter(
        &streams,
        "socketserver_connections_accepted",
        "Connections accepted.",
        None,
        None,
        |l| vec![("", l.accepted)],
    );
    o.counter(
        &dgrams,
        "socketserver_datagrams_received",
        "Datagrams received (oversize ones excluded).",
        None,
        None,
        |l| vec![("", l.accepted)],
    );
    o.gauge(
        &streams,
        "socketserver_connections_active",
        "Connections open now, parked idle ones included.",
        None,
        |l| Some(Value::Int(l.connections_active)),
    );
    o.gauge(
        &streams,
        "socketserver_connections_idle",
        "Connections open now and parked idle between requests (holding no thread).",
        None,
        |l| Some(Value::Int(l.connections_idle)),
    );
    o.gauge(
        &all,
        "socketserver_connections_limit",
        "The most connections (datagram servers: requests) served at once.",
        None,
        |l| Some(Value::Int(l.limit)),
    );
    o.counter(
        &all,
        "socketserver_connections_rejected",
        "Connections (datagrams) refused before any handler ran, by reason.",
        None,
        Some("reason"),
        |l| {
            let mut v = vec![
                ("verify", l.rejected_verify),
                ("shutdown", l.rejected_shutdown),
                ("fork_failed", l.rejected_fork),
            ];
            if l.stream {
                v.push(("proxy_header", l.rejected_proxy));
                v.push(("tls_handshake", l.rejected_tls));
            }
            v
        },
    );
    o.counter(
        &all,
        "socketserver_requests",
        "Requests handled to their end: each handler call of serve_requests, each connection of serve, each datagram.",
        None,
        None,
        |l| vec![("", l.requests)],
    );
    o.gauge(
        &all,
        "socketserver_requests_in_flight",
        "Requests being handled now (queued ones included).",
        None,
        |l| Some(Value::Int(l.in_flight)),
    );
    o.histogram(
        &all,
        "socketserver_request_duration_seconds",
        "How long requests took, from the handler's start to its reply's last byte.",
        |l| &l.request_duration,
    );
    o.histogram(
        &streams,
        "socketserver_connection_duration_seconds",
        "How long connections lasted, from accept to close.",
        |l| &l.connection_duration,
    );
    o.histogram(
        &tls,
        "socketserver_tls_handshake_duration_seconds",
        "How long TLS handshakes took, failed ones included.",
        |l| &l.tls_handshake,
    );
    o.counter(
        &all,
        "socketserver_handler_errors",
        "Handlers that failed, by kind: error (returned Err) or panic.",
        None,
        Some("kind"),
        |l| vec![("error", l.handler_errors), ("panic", l.panics)],
    );
    o.counter(
        &all,
        "socketserver_disconnects",
        "Connections whose client went away (reset, broken pipe, end of stream where a request was expected, as a TCP health check): not handler errors.",
        None,
        None,
        |l| vec![("", l.disconnects)],
    );
    o.counter(
        &all,
        "socketserver_timeouts",
        "Connections ended by a timeout, by kind: idle (no next request) or request (not received whole in time).",
        None,
        Some("kind"),
        |l| vec![("idle", l.idle_timeouts), ("request", l.request_timeouts)],
    );
    o.counter(
        &all,
        "socketserver_received_bytes",
        "Bytes handlers read (plaintext).",
        Some("bytes"),
        None,
        |l| vec![("", l.received_bytes)],
    );
    o.counter(
        &all,
        "socketserver_sent_bytes",
        "Bytes handlers sent (plaintext).",
        Some("bytes"),
        None,
        |l| vec![("", l.sent_bytes)],
    );
    o.counter(
        &streams,
        "socketserver_pushed_bytes",
        "Bytes pushed to connections through a Pusher (plaintext), accepted for sending.",
        Some("bytes"),
        None,
        |l| vec![("", l.pushed_bytes)],
    );
    o.counter(
        &streams,
        "socketserver_push_messages_dropped",
        "Pushed messages dropped because the connection's backlog was full (Overflow::DropMessage, or Overflow::Wait at shutdown).",
        None,
        None,
        |l| vec![("", l.push_dropped)],
    );
    o.counter(
        &streams,
        "socketserver_push_connections_closed",
        "Connections closed because of their push backlog, by reason: overflow (a push found it over its limit, Overflow::Close) or stall (no bytes taken for the stall timeout while pushed bytes waited).",
        None,
        Some("reason"),
        |l| vec![("overflow", l.push_overflows), ("stall", l.push_stalls)],
    );
    o.counter(
        &all,
        "socketserver_accept_errors",
        "Failed accept or recvfrom calls (retried, or backed off from).",
        None,
        None,
        |l| vec![("", l.accept_errors)],
    );
    o.counter(
        &dgrams,
        "socketserver_datagrams_oversize",
        "Datagrams larger than max_datagram_size, dropped and reported.",
        None,
        None,
        |l| vec![("", l.oversize)],
    );
    if !all.is_empty() {
        o.family(
            "socketserver_workers",
            Kind::Gauge,
            "Worker threads (forking: children) by state: busy serving, or idle waiting for work.",
            None,
        );
        for l in &all {
            for (state, n) in [("busy", l.workers.busy), ("idle", l.workers.idle)] {
                o.sample(
                    "socketserver_workers",
                    &[("listener", &l.name), ("state", state)],
                    Value::Int(n),
                );
            }
        }
    }
    let queued: Vec<_> = all.iter().filter(|l| l.queue.is_some()).collect();
    if !queued.is_empty() {
        o.family(
            "socketserver_queue_depth",
            Kind::Gauge,
            "Connections or datagrams accepted and waiting for a worker (the hand-off pool).",
            None,
        );
        for l in &queued {
            let (depth, _) = l.queue.unwrap_or_default();
            o.sample(
                "socketserver_queue_depth",
                &[("listener", &l.name)],
                Value::Int(depth),
            );
        }
        o.family(
            "socketserver_queue_capacity",
            Kind::Gauge,
            "The most connections or datagrams the hand-off pool's queue holds.",
            None,
        );
        for l in &queued {
            let (_, capacity) = l.queue.unwrap_or_default();
            o.sample(
                "socketserver_queue_capacity",
                &[("listener", &l.name)],
                Value::Int(capacity),
            );
        }
    }
    if format == MetricsFormat::OpenMetrics {
        o.s.push_str("# EOF\n");
    }
    o.s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut s = String::new();
        escape_label("a\\b\"c\nd", &mut s);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        let mut h = String::new();
        escape_help("x\\y\n\"z\"", MetricsFormat::Prometheus, &mut h);
        assert_eq!(h, "x\\\\y\\n\"z\"");
        h.clear();
        escape_help("\"z\"", MetricsFormat::OpenMetrics, &mut h);
        assert_eq!(h, "\\\"z\\\"");
    }

    #[test]
    fn accept_header_chooses_by_quality() {
        use MetricsFormat::*;
        assert_eq!(
            MetricsFormat::from_accept("application/openmetrics-text"),
            OpenMetrics
        );
        assert_eq!(
            MetricsFormat::from_accept("application/openmetrics-text;q=0.2, text/plain;q=0.5"),
            Prometheus
        );
        assert_eq!(
            MetricsFormat::from_accept("application/openmetrics-text;q=0"),
            Prometheus
        );
        assert_eq!(MetricsFormat::from_accept("*/*"), Prometheus);
        assert_eq!(
            MetricsFormat::from_accept("APPLICATION/OpenMetrics-Text; version=1.0.0"),
            OpenMetrics
        );
    }

    #[test]
    fn floats_are_written_as_both_formats_read_them() {
        let mut s = String::new();
        for v in [0.0005, 1.0, f64::INFINITY, f64::NAN, 2.5] {
            float(v, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "0.0005 1 +Inf NaN 2.5 ");
    }
}
