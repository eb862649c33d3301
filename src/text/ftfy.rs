//! ftfy's `fix_text`, for what affects text that is already valid UTF-8: HTML entities, C1
//! controls, ligatures, character width, quotes, line breaks, terminal escapes, control
//! characters, NFC, and mojibake of a whole text (its partial-mojibake heuristics are not
//! reproduced).

use unicode_normalization::UnicodeNormalization;

/// Windows-1252 for the C1 range, as ftfy's `fix_c1_controls` decodes it.
fn cp1252(c: char) -> Option<char> {
    const T: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    let u = c as u32;
    if (0x80..0xA0).contains(&u) { char::from_u32(T[(u - 0x80) as usize]) } else { None }
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

fn is_removed_control(c: char) -> bool {
    let u = c as u32;
    u < 0x09
        || u == 0x0B
        || (0x0E..0x20).contains(&u)
        || u == 0x7F
        || (0x206A..0x2070).contains(&u)
        || u == 0xFEFF
        || (0xFFF9..0xFFFD).contains(&u)
        || (0x1D173..0x1D17B).contains(&u)
        || (0xE0000..0xE0080).contains(&u)
}

fn named_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" | "AMP" => "&",
        "lt" | "LT" => "<",
        "gt" | "GT" => ">",
        "quot" | "QUOT" => "\"",
        "apos" => "'",
        "nbsp" => "\u{a0}",
        "mdash" => "—",
        "ndash" => "–",
        "hellip" => "…",
        "lsquo" => "‘",
        "rsquo" => "’",
        "ldquo" => "“",
        "rdquo" => "”",
        "copy" | "COPY" => "©",
        "reg" | "REG" => "®",
        "eacute" => "é",
        "egrave" => "è",
        "aacute" => "á",
        "agrave" => "à",
        "ccedil" => "ç",
        "uuml" => "ü",
        "ouml" => "ö",
        "auml" => "ä",
        "szlig" => "ß",
        "pound" => "£",
        "euro" => "€",
        "deg" => "°",
        "middot" => "·",
        "laquo" => "«",
        "raquo" => "»",
        _ => return None,
    })
}

/// ftfy's `unescape_html`: `&name;` and `&#NNN;` / `&#xHH;` entities.
fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let body_end = tail[1..].find(';').map(|j| j + 1);
        let replaced = body_end.and_then(|e| {
            let body = &tail[1..e];
            let ok = (1..=25).contains(&body.len())
                && body
                    .strip_prefix('#')
                    .unwrap_or(body)
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric())
                && !body.strip_prefix('#').unwrap_or(body).is_empty();
            if !ok {
                return None;
            }
            let rep = if let Some(num) = body.strip_prefix('#') {
                let v = if let Some(h) = num.strip_prefix(['x', 'X']) {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    num.parse::<u32>().ok()?
                };
                let c = char::from_u32(v)?;
                cp1252(c).unwrap_or(c).to_string()
            } else {
                named_entity(body)?.to_string()
            };
            Some((rep, e + 1))
        });
        match replaced {
            Some((rep, len)) => {
                out.push_str(&rep);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes `ESC [ digits/semicolons letter` sequences.
fn remove_terminal_escapes(s: &str) -> String {
    if !s.contains('\u{1b}') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '\u{1b}' && s[i + 1..].starts_with('[') {
            let body = &s[i + 2..];
            let n = body.find(|ch: char| !(ch.is_ascii_digit() || ch == ';')).unwrap_or(body.len());
            if body[n..].starts_with(|ch: char| ch.is_ascii_alphabetic()) {
                let skip_to = i + 2 + n + 1;
                while it.peek().is_some_and(|(j, _)| *j < skip_to) {
                    it.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The byte of `c` in "sloppy" Windows-1252 (cp1252 with its five holes as the C1 bytes).
fn sloppy_1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xA0..0x100).contains(&u) || [0x81, 0x8D, 0x8F, 0x90, 0x9D].contains(&u) {
        return Some(u as u8);
    }
    (0x80u8..0xA0).find(|&b| cp1252(char::from(b)) == Some(c))
}

/// ftfy's main mojibake repair, for the whole-text case: UTF-8 that was decoded as
/// Windows-1252 (`Ã©` for `é`, `â€œ` for `“`). The text is re-encoded and decoded again when
/// that succeeds and yields non-ASCII characters; anything else is left alone.
fn fix_mojibake(s: &str) -> Option<String> {
    if s.is_ascii()
        || !s.chars().any(|c| matches!(c, 'Ã' | 'Â' | 'â' | 'Ð' | 'Ñ' | 'Ø' | 'Ù' | 'Å' | 'Ä'))
    {
        return None;
    }
    let bytes: Vec<u8> = s.chars().map(sloppy_1252_byte).collect::<Option<_>>()?;
    let fixed = String::from_utf8(bytes).ok()?;
    (fixed != s).then_some(fixed)
}

/// True when no step of [`fix_once`] can change `s`: ASCII without `&`, ESC, CR or other
/// removed control characters (NFC is the identity on ASCII).
fn nothing_to_fix(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7F).contains(&b) && b != b'&' || b == b'\n' || b == b'\t' || b == 0x0C)
}

fn fix_once(s: &str) -> String {
    let s = if s.contains('<') { s.to_string() } else { unescape_html(s) };
    let s = fix_mojibake(&s).unwrap_or(s);
    let mut t = String::with_capacity(s.len());
    for c in s.chars() {
        let c = cp1252(c).unwrap_or(c);
        if let Some(l) = ligature(c) {
            t.push_str(l);
            continue;
        }
        let u = c as u32;
        if u == 0x3000 {
            t.push(' ');
            continue;
        }
        if (0xFF01..0xFFF0).contains(&u) {
            t.extend(std::iter::once(c).nfkc());
            continue;
        }
        t.push(match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            _ => c,
        });
    }
    let t = t.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    let t = remove_terminal_escapes(&t);
    let t: String = if t.chars().any(is_removed_control) {
        t.chars().filter(|&c| !is_removed_control(c)).collect()
    } else {
        t
    };
    if unicode_normalization::is_nfc_quick(t.chars()) == unicode_normalization::IsNormalized::Yes {
        t
    } else {
        t.nfc().collect()
    }
}

/// ftfy's `fix_text` (default settings) for valid UTF-8 text, repeated to a fixed point.
pub fn fix_text(s: &str) -> String {
    if nothing_to_fix(s) {
        return s.to_string();
    }
    let mut cur = s.to_string();
    for _ in 0..4 {
        let next = fix_once(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}
