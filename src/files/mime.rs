//! Content-Type by file extension: a built-in table, extended or overridden by a mime.types file.

use std::collections::HashMap;

const BUILT_IN: &[(&str, &str)] = &[
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("json", "application/json"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
];

pub const DEFAULT: &str = "application/octet-stream";

#[derive(Clone, Debug)]
pub struct MimeTypes {
    by_ext: HashMap<String, String>,
}

impl Default for MimeTypes {
    fn default() -> Self {
        MimeTypes {
            by_ext: BUILT_IN
                .iter()
                .map(|(e, t)| (e.to_string(), t.to_string()))
                .collect(),
        }
    }
}

impl MimeTypes {
    /// Adds the entries of a mime.types file, in Apache's (`type ext ext`) or nginx's
    /// (`types { type ext ext; }`) form. A line that names a type without a `/` is an error.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line
                .split('#')
                .next()
                .unwrap_or("")
                .replace(['{', '}', ';'], " ");
            let mut words = line.split_whitespace();
            let Some(ty) = words.next() else { continue };
            if ty == "types" {
                continue;
            }
            if !ty.contains('/') || ty.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!("line {}: {ty:?} is not a media type", n + 1));
            }
            for ext in words {
                self.by_ext.insert(ext.to_ascii_lowercase(), ty.to_string());
            }
        }
        Ok(())
    }

    pub fn for_name(&self, name: &str) -> &str {
        name.rsplit_once('.')
            .and_then(|(_, ext)| self.by_ext.get(&ext.to_ascii_lowercase()))
            .map_or(DEFAULT, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_file() {
        let mut m = MimeTypes::default();
        assert_eq!(m.for_name("a.HTML"), "text/html");
        assert_eq!(m.for_name("noext"), DEFAULT);
        m.load("# comment\ntypes {\n  text/x-foo foo FOO2;\n}\napplication/x-bar bar\n")
            .unwrap();
        assert_eq!(m.for_name("x.foo"), "text/x-foo");
        assert_eq!(m.for_name("x.foo2"), "text/x-foo");
        assert_eq!(m.for_name("x.bar"), "application/x-bar");
        assert!(m.load("nonsense ext\n").is_err());
    }
}
