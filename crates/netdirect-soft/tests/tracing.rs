//! The provider's `tracing` events, seen by a subscriber that records them with their fields
//! and their spans' fields: connection setup (MPA request, established, complete), a Terminate
//! decoded in words on both ends, the flush and disconnect that follow, and a reject seen from
//! both ends, on IPv4 and IPv6.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use netdirect::Connector;
use netdirect_types::{MrFlags, OpFlags, RemoteToken, Status};
use support::{Endpoint, Listening, WAIT, connect, open, sge};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One recorded event: its message, its fields, and the fields of every span it is in, as
/// `span.field` (innermost span first wins).
#[derive(Debug, Clone)]
struct Recorded {
    level: tracing::Level,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Recorded {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(f) = ext.get_mut::<Fields>() {
                values.record(f);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut fields = f.0;
        let message = fields.remove("message").unwrap_or_default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(sf) = span.extensions().get::<Fields>() {
                    for (k, v) in &sf.0 {
                        fields
                            .entry(format!("{}.{k}", span.name()))
                            .or_insert_with(|| v.clone());
                    }
                }
            }
        }
        self.0.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            message,
            fields,
        });
    }
}

/// The process-wide recorder (events come from the progress threads too, so the subscriber
/// is the global default).
fn recorder() -> &'static Recorder {
    static R: OnceLock<Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r = Recorder::default();
        let subscriber = tracing_subscriber::registry()
            .with(r.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        r
    })
}

/// The events of connections to or from `server` (by their conn span's addresses).
fn events_of(server: SocketAddr) -> Vec<Recorded> {
    let s = server.to_string();
    recorder()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.get("conn.peer") == Some(&s) || e.get("conn.local") == Some(&s))
        .cloned()
        .collect()
}

/// Waits until an event matches `pred` (events of the progress threads may come late).
fn wait_for(server: SocketAddr, what: &str, pred: impl Fn(&Recorded) -> bool) -> Recorded {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(e) = events_of(server).into_iter().find(&pred) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} event; recorded: {:#?}",
            events_of(server)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn role(e: &Recorded, role: &str) -> bool {
    e.get("conn.role") == Some(role)
}

fn connection_and_terminate(ip: IpAddr) {
    recorder();
    let server = open(ip);
    let client = open(ip);
    let s = Endpoint::new(&*server, 1, 16);
    let mut c = Endpoint::new(&*client, 2, 16);
    let listening = Listening::new(&*server, ip);
    let addr = listening.address;
    let conn = connect(&*client, &*c.qp, &listening, &*s.qp, WAIT);

    // Setup, from both ends, with the span naming the adapter and the negotiated MPA.
    let req = wait_for(addr, "MPA request", |e| {
        e.message == "MPA request received" && role(e, "passive")
    });
    assert_eq!(req.get("mpa_rev"), Some("2"), "{req:?}");
    assert_eq!(req.get("private_data"), Some("5"), "{req:?}");
    for r in ["active", "passive"] {
        let est = wait_for(addr, "MPA established", |e| {
            e.message == "MPA established" && role(e, r)
        });
        assert_eq!(est.level, tracing::Level::INFO);
        assert_eq!(est.get("mpa_rev"), Some("2"), "{est:?}");
        assert_eq!(est.get("ird"), Some("4"), "{est:?}");
        assert_eq!(est.get("ord"), Some("4"), "{est:?}");
        assert_eq!(est.get("crc"), Some("false"), "{est:?}");
        assert_eq!(est.get("adapter.address"), Some(ip.to_string().as_str()));
    }
    wait_for(addr, "connection complete", |e| {
        e.message == "connection complete" && role(e, "active")
    });

    // A write to a token the server never gave: the server sends a Terminate, the client
    // receives it; both in words, and the span carries what was negotiated.
    let buf = netdirect::Buffer::new(4096);
    let mr = c.register(&buf, 0, 4096, MrFlags::ALLOW_LOCAL_WRITE);
    c.qp.initiator()
        .write(
            1,
            &[sge(&buf, &*mr, 0, 64)],
            0x1000,
            RemoteToken(0xBAD0_0000),
            OpFlags::empty(),
        )
        .unwrap();
    c.completions(1);
    let sent = wait_for(addr, "Terminate sent", |e| {
        e.message == "Terminate" && role(e, "passive")
    });
    assert_eq!(sent.level, tracing::Level::WARN);
    assert_eq!(sent.get("direction"), Some("sent"));
    let words = sent.get("terminate").unwrap();
    assert!(
        words.starts_with("we sent a Terminate: DDP tagged buffer error: invalid STag"),
        "{words}"
    );
    assert_eq!(
        (
            sent.get("layer"),
            sent.get("error_type"),
            sent.get("error_code")
        ),
        (Some("1"), Some("1"), Some("0"))
    );
    assert_eq!(sent.get("conn.mpa_rev"), Some("2"), "{sent:?}");
    assert_eq!(sent.get("conn.ird"), Some("4"), "{sent:?}");
    let received = wait_for(addr, "Terminate received", |e| {
        e.message == "Terminate" && role(e, "active")
    });
    assert_eq!(received.get("direction"), Some("received"));
    assert!(
        received
            .get("terminate")
            .unwrap()
            .starts_with("the peer sent a Terminate: DDP tagged buffer error: invalid STag"),
        "{received:?}"
    );
    // The Terminate flushes both ends; the client's pending work completes in error.
    for r in ["active", "passive"] {
        wait_for(addr, "flushed", |e| e.message == "flushed" && role(e, r));
    }
    let _ = conn.active_disconnected.recv_timeout(WAIT);
    drop(conn);
    for r in ["active", "passive"] {
        wait_for(addr, "disconnected", |e| {
            e.message == "disconnected" && role(e, r)
        });
    }
}

fn reject(ip: IpAddr) {
    recorder();
    let server = open(ip);
    let client = open(ip);
    let c = Endpoint::new(&*client, 3, 4);
    let listener = server
        .create_listener(Arc::new(|conn: Box<dyn Connector>| {
            conn.reject(b"not today").unwrap();
        }))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let addr = listener.local_address().unwrap();
    let connector = client.create_connector().wait().unwrap();
    let r = connector.connect(&*c.qp, SocketAddr::new(ip, 0), addr, 1, 1, b"");
    assert_eq!(
        r.wait_timeout(WAIT).map_err(Status::from),
        Err(Status::CONNECTION_REFUSED)
    );
    let rejected = wait_for(addr, "connection rejected", |e| {
        e.message == "connection rejected" && role(e, "passive")
    });
    assert_eq!(rejected.get("private_data"), Some("9"));
    let peer = wait_for(addr, "peer rejected", |e| {
        e.message == "peer rejected the connection" && role(e, "active")
    });
    assert_eq!(peer.get("private_data"), Some("9"));
    let failed = wait_for(addr, "connect failed", |e| {
        e.message == "connect failed" && role(e, "active")
    });
    assert!(
        failed
            .get("status")
            .unwrap()
            .starts_with("STATUS_CONNECTION_REFUSED"),
        "{failed:?}"
    );
}

#[test]
fn connection_events_and_a_decoded_terminate_ipv4() {
    connection_and_terminate(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn connection_events_and_a_decoded_terminate_ipv6() {
    connection_and_terminate(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn reject_is_traced_on_both_ends_ipv4() {
    reject(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn reject_is_traced_on_both_ends_ipv6() {
    reject(IpAddr::V6(Ipv6Addr::LOCALHOST));
}
