//! How an attempt's request and answer headers are kept: as text, one
//! header a line (`name: value`), the way HTTP writes them, rather than as
//! JSON. Headers are plain text already, so most are copied as they are;
//! JSON would escape every byte of every one of them, which cost more than
//! the rest of an attempt's row.
//!
//! A request is its method on the first line, its URL on the second, then
//! its headers. Any text comes back exactly as written: in names and
//! values, `\` is kept as `\\`, a newline as `\n`, a carriage return as
//! `\r` and NUL as `\0` (which Postgres refuses in `text`); in names, `:`
//! as `\c` too, so that a line is split at its first `:`.

use super::history::RequestRecord;

/// Whether `s` may hold a byte [`push_escaped`] escapes: any control
/// character or `\` (and `:` when `name`), looked for eight bytes at a time
/// (headers are short: a call per byte, or a search per byte value, cost
/// more than the copy).
fn may_need_escapes(s: &[u8], name: bool) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // Whether a byte of `x` is below `n` (n <= 0x80), or is 0.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let has = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) || has(x, b'\\') || (name && has(x, b':')) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'\\' || (name && b == b':'))
}

/// Appends `s` to `out`, escaped as the [module docs](self) say (`:` too
/// when `name`).
fn push_escaped(out: &mut String, s: &str, name: bool) {
    if !may_need_escapes(s.as_bytes(), name) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            ':' if name => out.push_str("\\c"),
            c => out.push(c),
        }
    }
}

/// `s` with the escapes of [`push_escaped`] undone; `None` for an escape
/// it does not write.
fn unescaped(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            '0' => '\0',
            'c' => ':',
            _ => return None,
        });
    }
    Some(out)
}

fn push_headers(out: &mut String, headers: &[(String, String)]) {
    for (name, value) in headers {
        push_escaped(out, name, true);
        out.push_str(": ");
        push_escaped(out, value, false);
        out.push('\n');
    }
}

/// `headers` as kept.
pub(crate) fn headers_text(headers: &[(String, String)]) -> String {
    let mut out = String::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 3).sum());
    push_headers(&mut out, headers);
    out
}

/// `r` as kept.
pub(crate) fn request_text(r: &RequestRecord) -> String {
    let size: usize = r.headers.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
    let mut out = String::with_capacity(r.method.len() + r.url.len() + 2 + size);
    push_escaped(&mut out, &r.method, false);
    out.push('\n');
    push_escaped(&mut out, &r.url, false);
    out.push('\n');
    push_headers(&mut out, &r.headers);
    out
}

/// The lines of `text`, each ended by a newline (the last one too).
fn lines(text: &str) -> Option<Vec<&str>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let body = text.strip_suffix('\n')?;
    Some(body.split('\n').collect())
}

fn header_of(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    Some((unescaped(name)?, unescaped(value.strip_prefix(' ')?)?))
}

/// Headers read back from [`headers_text`]; `None` for a text it does not
/// write.
pub(crate) fn headers_of(text: &str) -> Option<Vec<(String, String)>> {
    lines(text)?.into_iter().map(header_of).collect()
}

/// A request read back from [`request_text`]; `None` for a text it does
/// not write.
pub(crate) fn request_of(text: &str) -> Option<RequestRecord> {
    let lines = lines(text)?;
    let (method, rest) = lines.split_first()?;
    let (url, headers) = rest.split_first()?;
    Some(RequestRecord {
        method: unescaped(method)?,
        url: unescaped(url)?,
        headers: headers
            .iter()
            .map(|l| header_of(l))
            .collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_headers_are_kept_as_http_writes_them() {
        let h = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-id".to_string(), "msg_1".to_string()),
        ];
        assert_eq!(
            headers_text(&h),
            "content-type: application/json\nwebhook-id: msg_1\n"
        );
        let r = RequestRecord {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook?a=1".into(),
            headers: h,
        };
        assert_eq!(
            request_text(&r),
            "POST\nhttp://127.0.0.1:9/hook?a=1\ncontent-type: application/json\nwebhook-id: msg_1\n"
        );
        assert_eq!(request_of(&request_text(&r)), Some(r));
        assert_eq!(headers_text(&[]), "");
        assert_eq!(headers_of(""), Some(Vec::new()));
    }

    #[test]
    fn the_quick_look_finds_every_byte_to_escape_wherever_it_is() {
        for len in 0..20 {
            for at in 0..len {
                for (b, name) in [
                    (b'\\', false),
                    (b'\n', false),
                    (b'\r', false),
                    (0, false),
                    (b':', true),
                ] {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert!(may_need_escapes(&s, name), "{s:?}");
                }
            }
            assert!(!may_need_escapes(&vec![b'a'; len], true));
            assert!(!may_need_escapes(&vec![b':'; len], false));
            assert!(!may_need_escapes("é漢~".repeat(len).as_bytes(), true));
        }
    }

    #[test]
    fn texts_it_does_not_write_are_refused() {
        for bad in ["a: b", "no colon\n", "a:b\n", "a: \\x\n"] {
            assert_eq!(headers_of(bad), None, "{bad:?}");
        }
        assert_eq!(request_of("POST\n"), None);
        assert_eq!(request_of(""), None);
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z-]{0,12}",
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just("\\"),
                    Just("\n"),
                    Just("\r"),
                    Just("\0"),
                    Just(":"),
                    Just(": "),
                    Just("\\n"),
                    Just("x"),
                    Just("é")
                ],
                0..8
            )
            .prop_map(|v| v.concat()),
        ]
    }

    proptest! {
        #[test]
        fn any_headers_and_request_come_back_as_written(
            method in any_text(),
            url in any_text(),
            headers in proptest::collection::vec((any_text(), any_text()), 0..6),
        ) {
            prop_assert_eq!(headers_of(&headers_text(&headers)), Some(headers.clone()));
            let r = RequestRecord { method, url, headers };
            prop_assert_eq!(request_of(&request_text(&r)), Some(r));
        }
    }
}
