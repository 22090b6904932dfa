//! The benchmark's and the tests' synthetic month: many organizations of many people, the
//! same every time, one organization at a time so that a large month need not be held whole.

use super::*;

impl BillableUsersSim {
    /// Deterministic data: `orgs` organizations named `Org 0001`.., `people_per_org` each, ids
    /// unique (1..), the same people every month with usage that varies by month.
    pub fn generate(period: Period, orgs: usize, people_per_org: usize) -> Vec<Person> {
        let mut people = Vec::with_capacity(orgs * people_per_org);
        for org in 0..orgs {
            people.extend(Self::generate_org(period, org, people_per_org));
        }
        people
    }

    /// The people of organization `org` (0-based) of [`generate`](Self::generate)'s month,
    /// in the order it lists them: a caller that renders pages can walk the organizations
    /// one by one and never hold every person at once.
    pub fn generate_org(period: Period, org: usize, people_per_org: usize) -> Vec<Person> {
        let month_seed = period.year() as u64 * 12 + u64::from(period.month());
        let organization = format!("Org {:04}", org + 1);
        (0..people_per_org)
            .map(|n| {
                let id = (org * people_per_org + n + 1) as u64;
                // A cheap, stable scramble so that numbers look varied but never change.
                let mix = id
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(month_seed.wrapping_mul(1_442_695_040_888_963_407))
                    >> 33;
                let sign_ins = mix % 50;
                Person {
                    id,
                    primary_email: format!("person{id}@org{:04}.example.com", org + 1),
                    name: format!("Person {id}"),
                    organization: organization.clone(),
                    business_unit: (n % 3 == 0).then(|| format!("Unit {}", org % 7 + 1)),
                    region: format!("Region {}", org % 5 + 1),
                    sign_ins,
                    last_visit: (sign_ins > 0).then(|| {
                        format!(
                            "{}T{:02}:{:02}:00+01:00",
                            period
                                .first_day()
                                .with_day(((mix % 28) + 1) as u32)
                                .unwrap_or(period.first_day()),
                            mix % 24,
                            mix % 60
                        )
                    }),
                    updates: (mix >> 8) % 200,
                }
            })
            .collect()
    }
}
