//! An ordered, case-insensitive multi-map of HTTP headers with byte values.
//!
//! nginx keeps request headers as a list of lines: names keep their original case, lookups
//! ignore case, a name may repeat, and values are arbitrary bytes (not necessarily UTF-8).
//! The PDK functions and the upstream request are computed from such a list.

/// One header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: String,
    pub value: Vec<u8>,
}

/// Header lines in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    lines: Vec<HeaderLine>,
}

impl HeaderMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a line (keeps existing lines with the same name).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.lines.push(HeaderLine { name: name.into(), value: value.into() });
    }

    /// Replaces every line named `name` by one line per value (`ngx.req.set_header`);
    /// no values removes the header.
    pub fn set(&mut self, name: &str, values: Vec<Vec<u8>>) {
        self.remove(name);
        for value in values {
            self.append(name, value);
        }
    }

    /// [`HeaderMap::set`] with an owned name (moved into the last line).
    pub(crate) fn set_owned(&mut self, name: String, values: Vec<Vec<u8>>) {
        self.remove(&name);
        let mut values = values.into_iter();
        let last = values.next_back();
        for value in values {
            self.lines.push(HeaderLine { name: name.clone(), value });
        }
        if let Some(value) = last {
            self.lines.push(HeaderLine { name, value });
        }
    }

    /// Removes every line named `name`.
    pub fn remove(&mut self, name: &str) {
        self.lines.retain(|l| !l.name.eq_ignore_ascii_case(name));
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.lines.iter().filter(|l| l.name.eq_ignore_ascii_case(name)).map(|l| l.value.as_slice()).collect()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.lines.iter().find(|l| l.name.eq_ignore_ascii_case(name)).map(|l| l.value.as_slice())
    }

    /// The first value of `name` as text (invalid UTF-8 replaced).
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn lines(&self) -> &[HeaderLine] {
        &self.lines
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lower-cased names with all their values, names in first-appearance order, looking at
    /// no more than `max_lines` lines (what `ngx.req.get_headers(max)` returns).
    pub fn grouped_lowercase(&self, max_lines: usize) -> Vec<(String, Vec<&[u8]>)> {
        let mut out: Vec<(String, Vec<&[u8]>)> = Vec::new();
        for line in self.lines.iter().take(max_lines) {
            let lower = line.name.to_ascii_lowercase();
            match out.iter_mut().find(|(n, _)| *n == lower) {
                Some((_, values)) => values.push(&line.value),
                None => out.push((lower, vec![&line.value])),
            }
        }
        out
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut map = HeaderMap::new();
        for (n, v) in iter {
            map.append(n, v);
        }
        map
    }
}
