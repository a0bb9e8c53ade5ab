//! Unit tests of plan.rs (kept apart so the module reads as one concept).

use super::*;

fn view<'a>(payload: &'a [u8], headers: &'a [(String, String)], topic: &'a str) -> View<'a> {
    View {
        payload,
        headers: Headers::All(headers),
        key: None,
        topic,
    }
}

#[test]
fn first_match_wins_and_cache_agrees() {
    let plan = Plan::new(
        [
            Some(r#"payload.priority == "high""#),
            Some(r#"payload.amount > 1000 && payload.currency == "EUR""#),
            Some(r#""vip" in payload.tags"#),
            Some(r#"headers["x-region"] == "eu""#),
            None,
            Some("payload.nope"),
        ],
        8,
    )
    .unwrap();
    let names = plan.header_names().to_vec();
    assert_eq!(names, vec!["x-region".to_owned()]);
    let cases: [(&str, Option<&str>, usize); 6] = [
        (r#"{"priority": "high"}"#, None, 0),
        (
            r#"{"priority": "low", "amount": 1500, "currency": "EUR"}"#,
            None,
            1,
        ),
        (
            r#"{"priority": "low", "amount": 15, "currency": "EUR", "tags": ["vip"]}"#,
            None,
            2,
        ),
        (
            r#"{"priority": "low", "amount": 15, "tags": []}"#,
            Some("eu"),
            3,
        ),
        (
            r#"{"priority": "low", "amount": 1500.5, "currency": "USD", "tags": []}"#,
            Some("us"),
            4,
        ),
        (
            r#"{"priority": "l\u006fw", "amount": 1, "tags": ["x"]}"#,
            Some("us"),
            4,
        ),
    ];
    for _ in 0..3 {
        for (payload, region, want) in cases {
            let values = [region];
            let v = View {
                payload: payload.as_bytes(),
                headers: Headers::Named(&values),
                key: None,
                topic: "t",
            };
            assert_eq!(plan.select(&v), Ok(Selection::Route(want)), "{payload}");
        }
    }
}

#[test]
fn errors_and_non_objects() {
    let plan = Plan::new([Some("payload.n"), None], 8).unwrap();
    let err = plan.select(&view(br#"{"n": 1}"#, &[], "t")).unwrap_err();
    assert!(
        err.starts_with("route 0 ('payload.n'): condition must be a bool"),
        "{err}"
    );
    let err = plan.select(&view(b"{nope", &[], "t")).unwrap_err();
    assert!(err.starts_with("payload is not valid JSON"), "{err}");
    let plan = Plan::new([Some("payload.a == 1"), None], 8).unwrap();
    let err = plan.select(&view(b"[1]", &[], "t")).unwrap_err();
    assert!(err.starts_with("route 0:"), "{err}");
    let whole = Plan::new([Some("size(payload) == 2")], 8).unwrap();
    assert_eq!(
        whole.select(&view(br#"{"a": 1, "b": 2}"#, &[], "t")),
        Ok(Selection::Route(0))
    );
    assert_eq!(
        Plan::new([], 8).unwrap().select(&view(b"", &[], "t")),
        Ok(Selection::NoMatch)
    );
}

#[test]
fn evaluates_values() {
    let plan = Plan::new([Some("payload.c.id + 1")], 0).unwrap();
    let v = view(br#"{"c": {"id": 7}, "x": "\u00e9"}"#, &[], "t");
    assert_eq!(plan.evaluate(&v), Ok(Value::Int(8)));
    let headers = vec![("h".to_owned(), "v".to_owned())];
    let plan = Plan::new([Some(r#"headers.h + topic"#)], 0).unwrap();
    assert_eq!(
        plan.evaluate(&view(b"", &headers, "t")),
        Ok(Value::from("vt"))
    );
}
