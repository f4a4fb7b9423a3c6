//! The raw query string, read and rewritten by one parser so that finding a key and removing
//! it can never disagree.
//!
//! The key is read from `kong.request.get_raw_query()` and, when hidden, removed with
//! `kong.service.request.set_raw_query(…)`: both exist on every Kong 3.x, unlike
//! `kong.service.request.clear_query_arg` (3.9+; on older Kong the call resolves to nothing
//! and the key would stay upstream). Names are compared after percent-decoding and ignoring
//! ASCII case, as header names are; the other arguments are kept byte for byte, in order.
//!
//! Splitting and decoding follow nginx's `ngx.req.get_uri_args` (what Kong's own
//! `get_query` returns): arguments are separated by `&`, a name without `=` is a flag, `+`
//! decodes to a space, `%XX` to its byte, and a malformed escape stays as it is.

/// The values of the arguments named in `names` (lower-case), in order of appearance. A flag
/// (`?apikey`) or an empty value contributes an empty value.
pub fn values<'q>(raw: &'q [u8], names: &'q [String]) -> impl Iterator<Item = Vec<u8>> + 'q {
    args(raw).filter_map(move |arg| {
        let (name, value) = split(arg);
        is_named(name, names).then(|| unescape(value))
    })
}

/// `raw` without any argument named in `names`, or `None` when it has none of them (so that
/// nothing needs to be sent back).
pub fn without(raw: &[u8], names: &[String]) -> Option<Vec<u8>> {
    let named = |arg: &&[u8]| is_named(split(arg).0, names);
    if !args(raw).any(|arg| named(&arg)) {
        return None;
    }
    let kept: Vec<&[u8]> = args(raw).filter(|arg| !arg.is_empty() && !named(arg)).collect();
    Some(kept.join(&b'&'))
}

fn args(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == b'&')
}

/// `name=value` → (name, value); a flag has an empty value.
fn split(arg: &[u8]) -> (&[u8], &[u8]) {
    match arg.iter().position(|b| *b == b'=') {
        Some(i) => (&arg[..i], &arg[i + 1..]),
        None => (arg, b""),
    }
}

fn is_named(raw_name: &[u8], names: &[String]) -> bool {
    if raw_name.is_empty() {
        return false;
    }
    let name = unescape(raw_name);
    names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(&name))
}

/// Percent-decoding as nginx does it for arguments.
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_match_whatever_their_case_or_encoding() {
        let n = names(&["apikey", "x-api-key"]);
        let got: Vec<Vec<u8>> = values(b"APIKEY=a&page=2&x%2Dapi%2Dkey=b%2Bc&ApiKey&other=x", &n).collect();
        assert_eq!(got, [b"a".to_vec(), b"b+c".to_vec(), Vec::new()]);
        assert_eq!(values(b"apikey=a+b%zz", &n).collect::<Vec<_>>(), [b"a b%zz".to_vec()]);
        assert_eq!(values(b"", &n).count(), 0);
    }

    #[test]
    fn removal_drops_exactly_what_matching_finds_and_keeps_the_rest_as_sent() {
        let n = names(&["apikey"]);
        let w = |raw: &str| without(raw.as_bytes(), &n).map(|q| String::from_utf8(q).unwrap());
        assert_eq!(w("page=2&APIKEY=k&q=a%20b&ApiKey=k2").as_deref(), Some("page=2&q=a%20b"));
        assert_eq!(w("api%4Bey=k").as_deref(), Some(""), "%4B is K");
        assert_eq!(w("apikey").as_deref(), Some(""), "a flag is removed too");
        assert_eq!(w("page=2&apikeys=1"), None, "nothing to remove: no round trip");
        assert_eq!(without(b"x=\xff&apikey=k", &n), Some(b"x=\xff".to_vec()), "other bytes kept as sent");
        for raw in ["APIKEY=k&x=1", "x=1&apikey=a&apikey=b", "Api%4Bey=k"] {
            let rest = w(raw).unwrap();
            assert_eq!(values(rest.as_bytes(), &n).count(), 0, "{raw} → {rest}");
        }
    }
}
