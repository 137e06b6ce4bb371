use super::*;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn now() -> Timestamp {
    ts("2026-01-01T00:00:00Z")
}

fn id() -> TemplateId {
    TemplateId::new(1).unwrap_or_else(|| unreachable!())
}

fn shop() -> ShopId {
    ShopId::new(7).unwrap_or_else(|| unreachable!())
}

fn good_draft() -> TemplateDraft {
    TemplateDraft {
        name: Some("Spring sale".into()),
        kind: Some(Kind::Threshold),
        amount_off: Some(500),
        threshold: Some(3_000),
        stock_total: Some(1_000),
        claim_start: Some(ts("2026-01-02T00:00:00Z")),
        claim_end: Some(ts("2026-01-03T00:00:00Z")),
        validity_hours: Some(72),
        ..Default::default()
    }
}

fn fields(r: Result<Template, ValidationErrors>) -> Vec<String> {
    match r {
        Ok(_) => vec![],
        Err(e) => e.into_vec().into_iter().map(|f| f.field).collect(),
    }
}

#[test]
fn good_draft_is_valid() {
    let t = good_draft().validate(id(), shop(), now());
    let Ok(t) = t else {
        panic!("expected valid: {t:?}")
    };
    assert_eq!(t.stock, 1_000);
    assert_eq!(t.per_user_limit, 1);
    assert_eq!(t.status, TemplateStatus::Active);
    assert_eq!(t.source, Source::Shop);
}

#[test]
fn every_error_is_reported_at_once() {
    let d = TemplateDraft {
        name: Some("  ".into()),
        kind: Some(Kind::Threshold),
        amount_off: Some(-1),
        threshold: Some(0),
        stock_total: Some(0),
        claim_start: Some(ts("2026-01-03T00:00:00Z")),
        claim_end: Some(ts("2026-01-02T00:00:00Z")),
        per_user_limit: Some(101),
        ..Default::default()
    };
    let f = fields(d.validate(id(), shop(), now()));
    for expected in [
        "name",
        "amount_off",
        "stock_total",
        "claim_end",
        "validity",
        "per_user_limit",
    ] {
        assert!(
            f.contains(&expected.to_string()),
            "{expected} missing from {f:?}"
        );
    }
}

#[test]
fn validity_modes() {
    let both = TemplateDraft {
        valid_from: Some(ts("2026-01-02T00:00:00Z")),
        valid_until: Some(ts("2026-02-01T00:00:00Z")),
        ..good_draft()
    };
    assert_eq!(
        fields(both.validate(id(), shop(), now())),
        vec!["validity_hours"]
    );

    let neither = TemplateDraft {
        validity_hours: None,
        ..good_draft()
    };
    assert_eq!(
        fields(neither.validate(id(), shop(), now())),
        vec!["validity"]
    );

    let absolute = TemplateDraft {
        validity_hours: None,
        valid_from: Some(ts("2026-01-02T00:00:00Z")),
        valid_until: Some(ts("2026-02-01T00:00:00Z")),
        ..good_draft()
    };
    assert!(absolute.validate(id(), shop(), now()).is_ok());

    let capped = TemplateDraft {
        valid_until: Some(ts("2026-02-01T00:00:00Z")),
        ..good_draft()
    };
    assert!(capped.validate(id(), shop(), now()).is_ok());

    let born_expired = TemplateDraft {
        valid_until: Some(ts("2026-01-01T12:00:00Z")),
        ..good_draft()
    };
    assert_eq!(
        fields(born_expired.validate(id(), shop(), now())),
        vec!["valid_until"]
    );
}

#[test]
fn scope_rules() {
    let goods_without_ids = TemplateDraft {
        scope: Some(Scope::Goods),
        ..good_draft()
    };
    assert_eq!(
        fields(goods_without_ids.validate(id(), shop(), now())),
        vec!["goods_ids"]
    );

    let g = |n| GoodsId::new(n).unwrap_or_else(|| unreachable!());
    let shop_with_ids = TemplateDraft {
        goods_ids: Some(vec![g(1)]),
        ..good_draft()
    };
    assert_eq!(
        fields(shop_with_ids.validate(id(), shop(), now())),
        vec!["goods_ids"]
    );

    let dup = TemplateDraft {
        scope: Some(Scope::Goods),
        goods_ids: Some(vec![g(1), g(1)]),
        ..good_draft()
    };
    assert_eq!(fields(dup.validate(id(), shop(), now())), vec!["goods_ids"]);

    let too_many = TemplateDraft {
        scope: Some(Scope::Goods),
        goods_ids: Some((1..=101).map(g).collect()),
        ..good_draft()
    };
    assert_eq!(
        fields(too_many.validate(id(), shop(), now())),
        vec!["goods_ids"]
    );
}

#[test]
fn kind_specific_fields() {
    let fixed_with_threshold = TemplateDraft {
        kind: Some(Kind::Fixed),
        ..good_draft()
    };
    assert_eq!(
        fields(fixed_with_threshold.validate(id(), shop(), now())),
        vec!["threshold"]
    );

    let percent_with_amount = TemplateDraft {
        kind: Some(Kind::Percent),
        percent_off: Some(20),
        ..good_draft()
    };
    assert_eq!(
        fields(percent_with_amount.validate(id(), shop(), now())),
        vec!["amount_off"]
    );

    let percent = TemplateDraft {
        kind: Some(Kind::Percent),
        amount_off: None,
        percent_off: Some(20),
        max_off: Some(1_000),
        ..good_draft()
    };
    let Ok(t) = percent.validate(id(), shop(), now()) else {
        panic!("percent should be valid")
    };
    assert_eq!(t.percent_off, Some(20));
    assert_eq!(t.amount_off, None);
}

#[test]
fn terminate_is_idempotent_and_blocks_stock() {
    let Ok(t) = good_draft().validate(id(), shop(), now()) else {
        panic!()
    };
    let Ok(Some(done)) = t.apply(TemplateChange::Terminate, now()) else {
        panic!()
    };
    assert_eq!(done.status, TemplateStatus::Terminated);
    assert_eq!(done.apply(TemplateChange::Terminate, now()), Ok(None));
    assert_eq!(
        done.apply(TemplateChange::AddStock(1), now()),
        Err(ChangeError::Terminated)
    );
}

#[test]
fn end_happens_only_after_the_window() {
    let Ok(t) = good_draft().validate(id(), shop(), now()) else {
        panic!()
    };
    assert_eq!(t.apply(TemplateChange::End, now()), Ok(None));
    let later = ts("2026-01-03T00:00:00Z");
    let Ok(Some(ended)) = t.apply(TemplateChange::End, later) else {
        panic!()
    };
    assert_eq!(ended.status, TemplateStatus::Ended);
    assert_eq!(
        t.apply(TemplateChange::AddStock(5), later),
        Err(ChangeError::Ended)
    );
    assert_eq!(
        t.apply(TemplateChange::Terminate, later),
        Err(ChangeError::Ended)
    );
}

proptest! {
    /// Money fields accept exactly 0..=MAX_MONEY; amount_off must also be positive.
    #[test]
    fn amount_off_range(a in prop_oneof![any::<i64>(), -5i64..5, (crate::money::MAX_MONEY - 2)..=(crate::money::MAX_MONEY + 2)]) {
        let d = TemplateDraft { kind: Some(Kind::Fixed), threshold: None, amount_off: Some(a), ..good_draft() };
        let ok = d.validate(id(), shop(), now()).is_ok();
        prop_assert_eq!(ok, (1..=crate::money::MAX_MONEY).contains(&a));
    }

    /// A threshold coupon is valid iff 0 < amount_off < threshold ≤ MAX_MONEY.
    #[test]
    fn threshold_vs_amount(a in -10i64..10_000, t in -10i64..10_000) {
        let d = TemplateDraft { amount_off: Some(a), threshold: Some(t), ..good_draft() };
        let ok = d.validate(id(), shop(), now()).is_ok();
        prop_assert_eq!(ok, a > 0 && t > a);
    }

    #[test]
    fn percent_off_range(p in prop_oneof![any::<i64>(), -2i64..102]) {
        let d = TemplateDraft { kind: Some(Kind::Percent), amount_off: None, threshold: None, percent_off: Some(p), ..good_draft() };
        let ok = d.validate(id(), shop(), now()).is_ok();
        prop_assert_eq!(ok, (1..=99).contains(&p));
    }

    /// The claim window is valid iff end > start and end is in the future.
    #[test]
    fn claim_window(start_min in -3_000i64..3_000, len_min in -100i64..3_000) {
        let start = now() + SignedDuration::from_mins(start_min);
        let end = start + SignedDuration::from_mins(len_min);
        let d = TemplateDraft { claim_start: Some(start), claim_end: Some(end), validity_hours: Some(1), ..good_draft() };
        let ok = d.validate(id(), shop(), now()).is_ok();
        prop_assert_eq!(ok, end > start && end > now());
    }

    #[test]
    fn stock_and_add_stock_never_pass_the_cap(total in -5i64..=MAX_STOCK + 5, add in -5i64..=MAX_STOCK + 5) {
        let d = TemplateDraft { stock_total: Some(total), ..good_draft() };
        match d.validate(id(), shop(), now()) {
            Err(_) => prop_assert!(!(1..=MAX_STOCK).contains(&total)),
            Ok(t) => {
                prop_assert!((1..=MAX_STOCK).contains(&total));
                match t.apply(TemplateChange::AddStock(add), now()) {
                    Ok(Some(n)) => {
                        prop_assert!(add >= 1 && n.stock_total == total + add && n.stock_total <= MAX_STOCK);
                        prop_assert_eq!(n.stock, n.stock_total);
                    }
                    Ok(None) => prop_assert!(false, "add stock is never a no-op"),
                    Err(_) => prop_assert!(add < 1 || total + add > MAX_STOCK),
                }
            }
        }
    }

    #[test]
    fn validity_hours_range(h in -5i64..9_000) {
        let d = TemplateDraft { validity_hours: Some(h), ..good_draft() };
        prop_assert_eq!(d.validate(id(), shop(), now()).is_ok(), (1..=MAX_VALIDITY_HOURS).contains(&h));
    }
}
