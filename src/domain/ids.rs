//! Newtypes for the identifiers that must never be mixed up.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// The customer as the billing system knows it (e.g. a RamBase customer or an
    /// ActivePlatform account id).
    BillingAccount
);
string_id!(
    /// What is sold, as the mapping rules and the pricing table name it.
    LicenseType
);
string_id!(
    /// The configured name of a source (the key under `[sources.*]`), e.g. `billable_users`.
    SourceName
);
