//! `--header [PREFIX=]'Name: value'`: extra header lines for the answers to paths under a prefix.
//!
//! Every rule whose prefix starts a path applies to it, in command-line order. Those prefixes
//! all start the longest of them, so the lines for a path are the lines for its longest matching
//! prefix: they are joined once at startup, one block per distinct prefix, and a request costs
//! a scan of the prefixes and no allocation. The blocks are shared (cloning the rules is a
//! reference count), so a proxied answer can carry its block to the relay without a copy.

use std::sync::Arc;

use crate::config::ExtraHeader;

#[derive(Clone, Debug, Default)]
pub struct HeaderRules {
    /// One per distinct prefix.
    blocks: Arc<[Block]>,
}

/// The lines for one answer, held until its head is written (a proxied one).
#[derive(Clone, Debug)]
pub struct HeaderBlock {
    rules: HeaderRules,
    index: usize,
}

impl HeaderBlock {
    pub fn bytes(&self) -> &[u8] {
        &self.rules.blocks[self.index].lines
    }
}

/// A prefix with every line that applies under it (each ending in CRLF).
#[derive(Clone, Debug)]
struct Block {
    prefix: Box<[u8]>,
    lines: Box<[u8]>,
}

impl HeaderRules {
    pub fn new(rules: &[ExtraHeader]) -> HeaderRules {
        let mut blocks: Vec<Block> = Vec::new();
        for r in rules {
            let prefix = r.prefix.as_bytes();
            if blocks.iter().any(|b| &*b.prefix == prefix) {
                continue;
            }
            let mut lines = Vec::new();
            for other in rules
                .iter()
                .filter(|o| prefix.starts_with(o.prefix.as_bytes()))
            {
                lines.extend_from_slice(other.line.as_bytes());
                lines.extend_from_slice(b"\r\n");
            }
            blocks.push(Block {
                prefix: prefix.into(),
                lines: lines.into(),
            });
        }
        HeaderRules {
            blocks: blocks.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The lines for the answers to `path` (normalised), empty when no rule applies.
    pub fn for_path(&self, path: &[u8]) -> &[u8] {
        self.index(path).map_or(&[], |i| &self.blocks[i].lines)
    }

    /// `for_path`'s lines, to be written later.
    pub fn block(&self, path: &[u8]) -> Option<HeaderBlock> {
        self.index(path).map(|index| HeaderBlock {
            rules: self.clone(),
            index,
        })
    }

    fn index(&self, path: &[u8]) -> Option<usize> {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| path.starts_with(&b.prefix))
            .max_by_key(|(_, b)| b.prefix.len())
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, line: &str) -> ExtraHeader {
        ExtraHeader {
            prefix: prefix.into(),
            line: line.into(),
        }
    }

    #[test]
    fn nested_prefixes_add_up_in_order() {
        let rules = HeaderRules::new(&[
            rule("/", "X-All: 1"),
            rule("/assets/", "Cache-Control: immutable"),
            rule("/api", "Access-Control-Allow-Origin: *"),
            rule("/assets/", "X-Two: 2"),
        ]);
        assert_eq!(rules.for_path(b"/index.html"), b"X-All: 1\r\n");
        assert_eq!(
            rules.for_path(b"/assets/app.js"),
            b"X-All: 1\r\nCache-Control: immutable\r\nX-Two: 2\r\n"
        );
        assert_eq!(
            rules.for_path(b"/api/x"),
            b"X-All: 1\r\nAccess-Control-Allow-Origin: *\r\n"
        );
        // A prefix is bytes, as the proxy's are: `/assets` would match `/assetsfoo`.
        assert_eq!(rules.for_path(b"/assets"), b"X-All: 1\r\n");
        assert!(HeaderRules::new(&[]).for_path(b"/").is_empty());
    }
}
