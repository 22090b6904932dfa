//! The usages list's page keys, and knobs that make the list misbehave the way a broken peer
//! would: a `paging.size` that lies, a next page key that skips a page. The knobs are off by
//! default and make the simulator accept nothing the real API refuses.

use super::RamBaseSim;

/// The paging faults to inject; the default is the honest API.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PagingFaults {
    /// Added to the true `paging.size` (never below 0).
    size_delta: i64,
    /// The next page key of this page (1-based) points two pages ahead.
    skip_after_page: Option<usize>,
}

impl RamBaseSim {
    /// `$inlinecount=allpages` answers `paging.size` = the true count + `delta` (never below 0):
    /// a list that says it holds more (or fewer) usages than it serves.
    pub fn announce_list_size(&self, delta: i64) {
        self.lock().paging.size_delta = delta;
    }

    /// The `nextPageKey` of page `page` (1-based) names the page after the next one, so that
    /// a client following keys never sees the page in between.
    pub fn skip_page_after(&self, page: usize) {
        self.lock().paging.skip_after_page = Some(page);
    }

    /// Turns every paging knob off again: the honest API.
    pub fn honest_paging(&self) {
        self.lock().paging = PagingFaults::default();
    }
}

impl PagingFaults {
    /// The `paging.size` announced for a list of `real` usages.
    pub(super) fn size(&self, real: usize) -> i64 {
        (real as i64).saturating_add(self.size_delta).max(0)
    }

    /// The offset the next page key of the page at `offset` names, if the list goes on.
    pub(super) fn next_offset(&self, offset: usize, top: usize, len: usize) -> Option<usize> {
        let step = match self.skip_after_page {
            Some(page) if page == offset / top + 1 => 2 * top,
            _ => top,
        };
        (offset + top < len).then(|| (offset + step).min(len.saturating_sub(1) / top * top))
    }
}

/// Page keys are opaque to clients; here they carry the list and the offset, so a key from
/// another list is refused.
pub(super) fn page_key(target: (u64, u64, u64), offset: usize) -> String {
    let raw = format!("{}:{}:{}:{offset}", target.0, target.1, target.2);
    raw.bytes().map(|b| format!("{:02x}", b ^ 0x5a)).collect()
}

pub(super) fn parse_page_key(key: &str, target: (u64, u64, u64)) -> Option<usize> {
    let bytes: Option<Vec<u8>> = (0..key.len())
        .step_by(2)
        .map(|i| {
            key.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .map(|b| b.map(|b| b ^ 0x5a))
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let (list, offset) = raw.rsplit_once(':')?;
    (list == format!("{}:{}:{}", target.0, target.1, target.2))
        .then(|| offset.parse().ok())
        .flatten()
}
