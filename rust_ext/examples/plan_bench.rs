//! Where the native per-message time goes, without the Python boundary:
//! `cargo run --release --example plan_bench`.
use _native::pick::pick;
use _native::plan::{Headers, Plan, View};
use _native::scan::scan;
use std::hint::black_box;
use std::time::Instant;

fn messages(n: usize) -> Vec<(Vec<u8>, &'static str)> {
    let mut seed = 7u64;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    (0..n)
        .map(|i| {
            let prio = ["low", "normal", "normal", "high", "low", "normal"][next(6) as usize];
            let cur = ["EUR", "USD", "GBP"][next(3) as usize];
            let tags = [r#"[]"#, r#"["vip"]"#, r#"["new","promo"]"#, r#"["returning"]"#][next(4) as usize];
            let amount = next(300_000) as f64 / 100.0 + 1.0;
            let body = format!(
                r#"{{"id":"ord-{i:08}","priority":"{prio}","amount":{amount},"currency":"{cur}","tags":{tags},"customer":{{"id":"c-{:04}","tier":"gold","cc":"DE"}},"note":""}}"#,
                next(5000)
            );
            let pad = 256usize.saturating_sub(body.len());
            let body = body.replace(r#""note":"""#, &format!(r#""note":"{}""#, "n".repeat(pad)));
            (body.into_bytes(), ["eu", "us", "apac"][next(3) as usize])
        })
        .collect()
}

fn time(name: &str, n: usize, mut f: impl FnMut()) {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{name:40} {best:7.0} ns/msg");
}

fn main() {
    let msgs = messages(4096);
    let n = msgs.len();
    let routes = [
        Some(r#"payload.priority == "high""#),
        Some(r#"payload.amount > 1000 && payload.currency == "EUR""#),
        Some(r#""vip" in payload.tags"#),
        Some(r#"headers["x-region"] == "eu""#),
        None,
    ];
    let wanted: Vec<String> = ["amount", "currency", "id", "priority", "tags"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    time("serde_json IgnoredAny", n, || {
        for (p, _) in &msgs {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok());
        }
    });
    time("pick (serde, 5 members)", n, || {
        for (p, _) in &msgs {
            black_box(pick(p, &wanted));
        }
    });
    time("scan (5 members)", n, || {
        for (p, _) in &msgs {
            black_box(scan(p, &wanted));
        }
    });
    for (label, fast, cache) in [
        ("Plan::select fast, cache", true, 1024),
        ("Plan::select fast, no cache", true, 0),
        ("Plan::select interpreted, cache", false, 1024),
        ("Plan::select interpreted, no cache", false, 0),
    ] {
        let mut plan = Plan::new(routes, cache).unwrap();
        plan.set_fast(fast);
        time(label, n, || {
            for (p, region) in &msgs {
                let values = [Some(*region)];
                let v = View {
                    payload: p,
                    headers: Headers::Named(&values),
                    key: None,
                    topic: "orders.new",
                };
                black_box(plan.select(&v).unwrap());
            }
        });
    }
}
