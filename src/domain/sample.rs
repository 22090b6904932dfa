//! A line's evidence sample, held in the form the ledger stores it.
//!
//! A period holds one sample per line from pricing until the ledger has it. As a list of
//! strings a sample is an allocation per record named plus one for the list, a third of a line's
//! memory; as the JSON list the ledger stores (`["7@Acme (Acme, agent)", ...]`) it is one, and
//! writing it needs no encoding. It is read as entries only where a person sees it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A few of a line's records, `record key (customer key, item)`: the JSON list of their names,
/// or nothing (a revision stored before samples were kept, or one read for planning).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Sample(Option<Box<str>>);

impl Sample {
    /// The sample naming these entries, in this order.
    pub fn from_entries<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Sample {
        let mut json = String::from("[");
        for entry in entries {
            if json.len() > 1 {
                json.push(',');
            }
            // Writing a string into a String cannot fail.
            let quoted = serde_json::to_string(entry.as_ref()).unwrap_or_default();
            json.push_str(&quoted);
        }
        if json.len() == 1 {
            return Sample(None);
        }
        json.push(']');
        Sample(Some(json.into_boxed_str()))
    }

    /// The sample as stored: a JSON list of strings, else an error saying what it holds.
    pub fn from_json(text: &str) -> Result<Sample, serde_json::Error> {
        let entries: Vec<String> = serde_json::from_str(text)?;
        Ok(Sample::from_entries(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The JSON list to store; `None` when the sample is empty.
    pub fn as_json(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The names of the records, for a person to read.
    pub fn entries(&self) -> Vec<String> {
        // Every sample is made by `from_entries`, so its text is a list of strings.
        self.as_json()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }
}

impl fmt::Debug for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

/// Written and read as the list of its entries, as before it was held compactly.
impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sample, D::Error> {
        Vec::<String>::deserialize(deserializer).map(Sample::from_entries)
    }
}

impl<S: AsRef<str>> FromIterator<S> for Sample {
    fn from_iter<I: IntoIterator<Item = S>>(entries: I) -> Sample {
        Sample::from_entries(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn a_sample_is_stored_as_the_json_list_of_its_entries_and_read_back_whole() {
        let sample = Sample::from_entries(["7@Acme (Acme, agent)", "say \"hi\"\n (x, y)"]);
        assert_eq!(
            sample.as_json(),
            Some(r#"["7@Acme (Acme, agent)","say \"hi\"\n (x, y)"]"#)
        );
        assert_eq!(
            sample.entries(),
            ["7@Acme (Acme, agent)", "say \"hi\"\n (x, y)"]
        );
        assert_eq!(
            Sample::from_json(sample.as_json().unwrap()).unwrap(),
            sample
        );
        assert_eq!(
            serde_json::to_string(&sample).unwrap(),
            sample.as_json().unwrap()
        );
        assert_eq!(sample.len(), 2);
    }

    #[test]
    fn an_empty_sample_stores_nothing_and_a_stored_text_that_is_not_a_list_is_refused() {
        assert!(Sample::from_entries(Vec::<String>::new()).is_empty());
        assert_eq!(Sample::from_json("[]").unwrap().as_json(), None);
        assert!(Sample::from_json("{\"a\": 1}").is_err());
        assert!(Sample::from_json("[1, 2]").is_err());
    }
}
