//! The original GPT-1 text pipeline: `ftfy.fix_text`, the paper code's `text_standardize`,
//! spaCy's English tokenizer, lowercasing, and the original BPE with unknown pieces as id 0.
//!
//! spaCy's rules (prefix, suffix, infix and URL patterns, 1,347 special cases) come from the
//! installed spaCy through `tools/export_spacy_rules.py` into `spacy_en.json` (MIT-licensed
//! data); the algorithm that applies them is spaCy's `Tokenizer._split_affixes` /
//! `_attach_tokens`, written here. ftfy is reproduced for what affects text that is already
//! valid UTF-8 (HTML entities, C1 controls, ligatures, character width, quotes, line breaks,
//! terminal escapes, control characters, NFC); its mojibake repair is not.

use fancy_regex::Regex;
use rustc_hash::FxHashMap as HashMap;
use std::collections::HashMap as StdHashMap;
use unicode_normalization::UnicodeNormalization;

const SPACY_EN: &str = include_str!("spacy_en.json");

/// Python's `str.isspace`.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

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

/// The original code's `text_standardize`.
pub fn text_standardize(s: &str) -> String {
    fn padded(c: char) -> bool {
        matches!(
            c,
            '-' | '~'
                | '!'
                | '"'
                | ';'
                | '?'
                | '+'
                | ','
                | ')'
                | '('
                | '\\'
                | '/'
                | '*'
                | '['
                | ']'
                | '}'
                | '{'
                | '|'
                | '_'
        )
    }
    let s = if s.is_ascii() {
        s.to_string()
    } else {
        s.replace(['—', '–', '―'], "-").replace('…', "...").replace('´', "'")
    };
    // Pad runs of one padded character with spaces.
    let mut a = String::with_capacity(s.len() + 16);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if padded(c) {
            a.push(' ');
            a.push(c);
            while chars.peek() == Some(&c) {
                a.push(c);
                chars.next();
            }
            a.push(' ');
        } else {
            a.push(c);
        }
    }
    // Whitespace runs: with a newline → " \n ", without → " ".
    let mut b = String::with_capacity(a.len());
    let mut chars = a.chars().peekable();
    while let Some(c) = chars.next() {
        if py_isspace(c) {
            let mut newline = c == '\n';
            while let Some(&n) = chars.peek() {
                if !py_isspace(n) {
                    break;
                }
                newline |= n == '\n';
                chars.next();
            }
            b.push_str(if newline { " \n " } else { " " });
        } else {
            b.push(c);
        }
    }
    b.trim_matches(py_isspace).to_string()
}

/// spaCy's English tokenizer (rules exported from spaCy; see the module doc).
pub struct Spacy {
    prefix: Regex,
    suffix: Regex,
    infix: Regex,
    url: Option<Regex>,
    token_match: Option<Regex>,
    specials: HashMap<String, Vec<String>>,
    /// Token boundaries per whitespace-free span, as spaCy caches them: words repeat.
    cache: std::sync::RwLock<HashMap<String, Vec<(u32, u32)>>>,
}

impl Spacy {
    pub fn english() -> Self {
        let v: serde_json::Value =
            serde_json::from_str(SPACY_EN).expect("embedded spacy_en.json is valid");
        let re = |k: &str| {
            v[k].as_str().map(|p| {
                Regex::new(p).unwrap_or_else(|e| panic!("embedded spaCy {k} pattern: {e}"))
            })
        };
        let specials = v["special_cases"]
            .as_object()
            .expect("special_cases")
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    p.as_array()
                        .expect("pieces")
                        .iter()
                        .map(|x| x.as_str().expect("piece").to_string())
                        .collect(),
                )
            })
            .collect();
        Spacy {
            prefix: re("prefix").expect("prefix"),
            suffix: re("suffix").expect("suffix"),
            infix: re("infix").expect("infix"),
            url: re("url"),
            token_match: re("token_match"),
            specials,
            cache: Default::default(),
        }
    }

    fn matches(re: &Option<Regex>, s: &str) -> bool {
        re.as_ref().is_some_and(|r| r.find(s).ok().flatten().is_some_and(|m| m.start() == 0))
    }

    fn find_prefix(&self, s: &str) -> usize {
        // Every prefix starts with a symbol, or is "US$", "C$" or "A$": skip the regex for
        // other letters and digits.
        if s.starts_with(|c: char| c.is_alphanumeric() && !matches!(c, 'U' | 'C' | 'A')) {
            return 0;
        }
        self.prefix.find(s).ok().flatten().filter(|m| m.start() == 0).map_or(0, |m| m.end())
    }

    fn find_suffix(&self, s: &str) -> usize {
        // Suffixes ending in a letter are units or currencies after a digit, or 's / 'S: skip
        // the regex for words that end in a letter and hold neither.
        if s.ends_with(char::is_alphabetic)
            && !s.contains(|c: char| c.is_numeric() || c == '\'' || c == '’')
        {
            return 0;
        }
        self.suffix
            .find(s)
            .ok()
            .flatten()
            .filter(|m| m.end() == s.len())
            .map_or(0, |m| m.end() - m.start())
    }

    /// Tokens of `text` (spaCy's `Doc` token texts, whitespace tokens included).
    pub fn tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut in_ws = false;
        for (i, c) in text.char_indices() {
            if py_isspace(c) != in_ws {
                if start < i {
                    self.span(&text[start..i], &mut out);
                }
                start = if c == ' ' { i + 1 } else { i };
                in_ws = !in_ws;
            }
        }
        if start < text.len() {
            self.span(&text[start..], &mut out);
        }
        out
    }

    fn span<'a>(&self, s: &'a str, out: &mut Vec<&'a str>) {
        if let Some(b) = self.cache.read().expect("cache lock").get(s) {
            out.extend(b.iter().map(|&(x, y)| &s[x as usize..y as usize]));
            return;
        }
        let first = out.len();
        self.span_uncached(s, out);
        let base = s.as_ptr() as usize;
        let bounds: Vec<(u32, u32)> = out[first..]
            .iter()
            .map(|t| {
                let x = t.as_ptr() as usize - base;
                (x as u32, (x + t.len()) as u32)
            })
            .collect();
        let mut c = self.cache.write().expect("cache lock");
        if c.len() < 1 << 20 {
            c.insert(s.to_string(), bounds);
        }
    }

    fn span_uncached<'a>(&self, s: &'a str, out: &mut Vec<&'a str>) {
        if self.special(s, out) {
            return;
        }
        let (mut prefixes, mut suffixes) = (Vec::new(), Vec::new());
        let mut string = s;
        let mut last = usize::MAX;
        while !string.is_empty() && string.len() != last {
            if Self::matches(&self.token_match, string) || self.specials.contains_key(string) {
                break;
            }
            last = string.len();
            let pre = self.find_prefix(string);
            if pre != 0 {
                let minus = &string[pre..];
                if !minus.is_empty() && self.specials.contains_key(minus) {
                    prefixes.push(&string[..pre]);
                    string = minus;
                    break;
                }
            }
            let suf = self.find_suffix(&string[pre..]);
            if suf != 0 {
                let minus = &string[..string.len() - suf];
                if !minus.is_empty() && self.specials.contains_key(minus) {
                    suffixes.push(&string[string.len() - suf..]);
                    string = minus;
                    break;
                }
            }
            if pre != 0 && suf != 0 && pre + suf <= string.len() {
                prefixes.push(&string[..pre]);
                suffixes.push(&string[string.len() - suf..]);
                string = &string[pre..string.len() - suf];
            } else if pre != 0 {
                prefixes.push(&string[..pre]);
                string = &string[pre..];
            } else if suf != 0 {
                suffixes.push(&string[string.len() - suf..]);
                string = &string[..string.len() - suf];
            }
            if self.specials.contains_key(string) {
                break;
            }
        }
        out.extend(prefixes);
        if !string.is_empty() && !self.special(string, out) {
            if Self::matches(&self.token_match, string)
                || (string.contains('.') && Self::matches(&self.url, string))
            {
                out.push(string);
            } else if string.chars().all(char::is_alphanumeric) {
                // Every infix pattern needs a character that is not a letter or digit.
                out.push(string);
            } else {
                let mut start = 0;
                for m in self.infix.find_iter(string).flatten() {
                    if m.start() == start {
                        continue;
                    }
                    out.push(&string[start..m.start()]);
                    if m.start() != m.end() {
                        out.push(&string[m.start()..m.end()]);
                    }
                    start = m.end();
                }
                if start < string.len() {
                    out.push(&string[start..]);
                }
            }
        }
        out.extend(suffixes.into_iter().rev());
    }

    /// Emits a special case's pieces (slices of `s`) when `s` is one.
    fn special<'a>(&self, s: &'a str, out: &mut Vec<&'a str>) -> bool {
        let Some(pieces) = self.specials.get(s) else {
            return false;
        };
        let mut at = 0;
        for p in pieces {
            if s[at..].starts_with(p.as_str()) {
                out.push(&s[at..at + p.len()]);
                at += p.len();
            } else {
                // A piece that is not the text in place (spaCy's pieces always are): keep the rest.
                out.push(&s[at..]);
                return true;
            }
        }
        true
    }
}

/// The original BPE (the paper code's `TextEncoder.bpe`), with its cache.
pub struct OriginalBpe {
    ranks: HashMap<(String, String), u32>,
    encoder: HashMap<String, u32>,
    cache: std::sync::RwLock<HashMap<String, Vec<u32>>>,
}

impl OriginalBpe {
    pub fn new(encoder: StdHashMap<String, u32>, merges: &[(String, String)]) -> Self {
        let encoder = encoder.into_iter().collect();
        let ranks = merges
            .iter()
            .enumerate()
            .map(|(i, (a, b))| ((a.clone(), b.clone()), i as u32))
            .collect();
        OriginalBpe { ranks, encoder, cache: Default::default() }
    }

    /// Ids of one spaCy token (lowercased here, as the original code does).
    pub fn ids(&self, token: &str, out: &mut Vec<u32>) {
        if let Some(v) = self.cache.read().expect("cache lock").get(token) {
            out.extend_from_slice(v);
            return;
        }
        let pieces = self.bpe(&token.to_lowercase());
        let ids: Vec<u32> =
            pieces.split(' ').map(|p| self.encoder.get(p).copied().unwrap_or(0)).collect();
        out.extend_from_slice(&ids);
        let mut c = self.cache.write().expect("cache lock");
        if c.len() < 1 << 20 {
            c.insert(token.to_string(), ids);
        }
    }

    fn bpe(&self, token: &str) -> String {
        let chars: Vec<char> = token.chars().collect();
        let Some((last, init)) = chars.split_last() else {
            return "</w>".to_string();
        };
        let mut word: Vec<String> = init.iter().map(|c| c.to_string()).collect();
        word.push(format!("{last}</w>"));
        if word.len() == 1 {
            return format!("{token}</w>");
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, w[0].clone(), w[1].clone()))
                })
                .min();
            let Some((_, first, second)) = best else {
                break;
            };
            let mut new = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    new.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    new.push(word[i].clone());
                    i += 1;
                }
            }
            word = new;
            if word.len() == 1 {
                break;
            }
        }
        let joined = word.join(" ");
        if joined == "\n  </w>" { "\n</w>".to_string() } else { joined }
    }
}
