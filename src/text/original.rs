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

pub use super::ftfy::fix_text;

const SPACY_EN: &str = include_str!("spacy_en.json");

/// Python's `str.isspace`.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
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
