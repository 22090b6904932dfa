use super::*;

fn period() -> Period {
    Period::new(2026, 10).unwrap()
}

#[test]
fn generated_data_is_deterministic_with_unique_ids() {
    let a = BillableUsersSim::generate(period(), 3, 4);
    let b = BillableUsersSim::generate(period(), 3, 4);
    assert_eq!(a, b);
    assert_eq!(a.len(), 12);
    let mut ids: Vec<u64> = a.iter().map(|p| p.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert_eq!(a[0].organization, "Org 0001");
    assert_eq!(a[11].organization, "Org 0003");
    for p in &a {
        if let Some(visit) = &p.last_visit {
            assert!(
                chrono::DateTime::parse_from_rfc3339(visit).is_ok(),
                "{visit}"
            );
        }
    }
}

#[test]
fn links_cover_first_prev_next_last() {
    let query = vec![
        ("year".to_owned(), "2026".to_owned()),
        ("month".to_owned(), "10".to_owned()),
        ("page".to_owned(), "2".to_owned()),
    ];
    let link = links(
        "127.0.0.1:9",
        "/v1/account/billable_users",
        &query,
        2,
        100,
        3,
        Some(3),
    );
    assert_eq!(
        link,
        "<http://127.0.0.1:9/v1/account/billable_users?year=2026&month=10&page=1&per_page=100>; rel=\"first\", \
         <http://127.0.0.1:9/v1/account/billable_users?year=2026&month=10&page=1&per_page=100>; rel=\"prev\", \
         <http://127.0.0.1:9/v1/account/billable_users?year=2026&month=10&page=3&per_page=100>; rel=\"next\", \
         <http://127.0.0.1:9/v1/account/billable_users?year=2026&month=10&page=3&per_page=100>; rel=\"last\""
    );
    let last = links("h", "/p", &[], 3, 100, 3, None);
    assert!(!last.contains("rel=\"next\""), "{last}");
}

#[test]
fn csv_quotes_per_rfc_4180_and_defuses_formulas() {
    let person = Person {
        id: 7,
        primary_email: "a@x.example".into(),
        name: "=HYPERLINK(\"x\")".into(),
        organization: "Widget Data Center, External IT".into(),
        business_unit: None,
        region: "-North".into(),
        sign_ins: 0,
        last_visit: None,
        updates: 3,
    };
    let columns: Vec<String> = CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let csv = to_csv(&[&person], &columns, true).unwrap();
    assert_eq!(
        csv,
        "id,primary_email,name,organization,business_unit,region,sign_ins,last_visit,updates\r\n\
         7,a@x.example,\"\t=HYPERLINK(\"\"x\"\")\",\"Widget Data Center, External IT\",,\t-North,0,,3\r\n"
    );
    let unguarded = to_csv(&[&person], &["name".to_owned(), "nope".to_owned()], false).unwrap();
    assert_eq!(unguarded, "name,nope\r\n\"=HYPERLINK(\"\"x\"\")\",\r\n");
}
